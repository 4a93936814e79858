/**
 * The error classes of overlayd. Every error a user can meet carries a stable `code`
 * so scripts and tests can tell them apart without matching on message text.
 */
export class OverlaydError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Bad flags, environment, static config file or etcd network config. */
export class ConfigError extends OverlaydError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG', message, options);
  }
}

/** Talking to etcd failed, or etcd holds something we cannot accept. */
export class EtcdError extends OverlaydError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_ETCD', message, options);
  }
}

/** Subnet lease problems: network exhausted, lease taken by another node. */
export class LeaseError extends OverlaydError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_LEASE', message, options);
  }
}

/** Opening or configuring the TUN device failed. */
export class TunError extends OverlaydError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TUN', message, options);
  }
}

/** An ip(8)/nft(8) command failed; message carries the command line and its stderr. */
export class LinkError extends OverlaydError {
  readonly command: string;
  readonly stderr: string;
  constructor(command: string, stderr: string, message?: string) {
    super('ERR_LINK', message ?? `command failed: ${command}: ${stderr.trim() || 'no output'}`);
    this.command = command;
    this.stderr = stderr;
  }
}

/** Another overlayd already runs in this network namespace. */
export class AlreadyRunningError extends OverlaydError {
  constructor(message: string) {
    super('ERR_ALREADY_RUNNING', message);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
