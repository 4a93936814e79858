/** The one place that turns `--engine` into an Engine. */
import type { EngineKind } from '../config';
import type { Engine, EngineOptions } from './engine';
import { JsEngine } from './js-engine';
import { NativeEngine } from './native-engine';

export function createEngine(kind: EngineKind, opts: EngineOptions): Engine {
  switch (kind) {
    case 'native':
      return new NativeEngine(opts);
    case 'js':
      return new JsEngine(opts);
  }
}
