/**
 * Just enough of systemd's unit syntax to turn a flanneld unit into what the service would
 * get: Environment= assignments, EnvironmentFile= text, and ExecStart= with its variable
 * expansion (systemd.service(5), "Command lines": `${VAR}` stays one word, `$VAR` alone as a
 * word splits at whitespace). Quoting inside ExecStart is not handled (the units tested use none).
 */

/** KEY=VALUE lines of an EnvironmentFile (comments, blank lines, surrounding quotes removed). */
export function parseEnvironmentFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`not an assignment: ${line}`);
    out[m[1] as string] = (m[2] as string).replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return out;
}

/** The unit's Environment= assignments ("K=V" "K2=V2" or K=V). */
export function unitEnvironment(unit: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment=(.*)$/gm)) {
    for (const a of (m[1] as string).match(/"[^"]*"|\S+/g) ?? []) {
      const text = a.replace(/^"(.*)"$/, '$1');
      const eq = text.indexOf('=');
      out[text.slice(0, eq)] = text.slice(eq + 1);
    }
  }
  return out;
}

/** The argv of the unit's ExecStart= after the program, expanded with `env`. */
export function execStartArgs(unit: string, env: Record<string, string>): string[] {
  const joined = unit.replace(/\\\n/g, ' ');
  const m = /^ExecStart=(.*)$/m.exec(joined);
  if (!m) throw new Error('no ExecStart=');
  const words = (m[1] as string).trim().split(/\s+/);
  const out: string[] = [];
  for (const w of words.slice(1)) {
    const bare = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(w);
    if (bare) {
      out.push(...(env[bare[1] as string] ?? '').split(/\s+/).filter((s) => s !== ''));
      continue;
    }
    out.push(w.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, k: string) => env[k] ?? ''));
  }
  return out;
}
