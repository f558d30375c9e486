// Adapter from plugin/uffd's FaultEngine to the FaultEngineLike the server drives.
import type { EngineFactory } from './engine.js';

export const realEngineFactory: EngineFactory = () => {
  throw new Error('the native fault engine (plugin/uffd) has not landed yet');
};
