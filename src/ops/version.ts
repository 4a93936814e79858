/** overlayd's version (package.json), for --version, the start line and the status document. */
export const VERSION: string = (require('../../../package.json') as { version: string }).version;
