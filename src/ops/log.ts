/**
 * Logging: pino, JSON lines on stdout (journald takes them). One line per event that
 * matters; never one per packet.
 */
import pino from 'pino';

export type Logger = pino.Logger;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A logger writing synchronously to fd 1 (so nothing is lost on exit). */
export function createLogger(level: LogLevel, name = 'overlayd'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 1, sync: true }));
}

/** A logger that drops everything (tests that do not inspect logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
