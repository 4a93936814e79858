/**
 * --ip-masq: traffic from pods to destinations outside the cluster Network leaves with the
 * node's address; traffic inside the Network keeps its source. The rules live in overlayd's
 * own nftables table (`ip overlayd`), replaced atomically (idempotent over a restart or a
 * crashed instance's leftovers) and deleted on shutdown. Per network namespace.
 */
import { execFile } from 'node:child_process';
import { LinkError } from '../errors';
import { formatPrefix, type Prefix } from './addr';

export const MASQ_TABLE = 'overlayd';
const NFT_TIMEOUT_MS = 10_000;

function nft(args: readonly string[], stdin?: string): Promise<void> {
  const command = `nft ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    const child = execFile('nft', [...args], { timeout: NFT_TIMEOUT_MS, encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err) reject(new LinkError(command, stderr || err.message));
      else resolve();
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

/** The nft script that (re)creates the table in one transaction. */
export function masqScript(network: Prefix): string {
  const net = formatPrefix(network);
  return [
    `table ip ${MASQ_TABLE}`,
    `delete table ip ${MASQ_TABLE}`,
    `table ip ${MASQ_TABLE} {`,
    '  chain postrouting {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    ip saddr ${net} ip daddr ${net} return`,
    `    ip saddr ${net} ip daddr 224.0.0.0/4 return`,
    `    ip saddr ${net} masquerade fully-random`,
    '  }',
    '}',
    '',
  ].join('\n');
}

export async function installMasq(network: Prefix): Promise<void> {
  await nft(['-f', '-'], masqScript(network));
}

/** Deletes overlayd's table; absent is fine. */
export async function removeMasq(): Promise<void> {
  await nft(['-f', '-'], `table ip ${MASQ_TABLE}\ndelete table ip ${MASQ_TABLE}\n`);
}
