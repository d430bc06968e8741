/**
 * TypeScript SDK of safehouse, an isolation runtime for AI agents; the Python SDK's shape.
 *
 *     import { Sandbox } from 'safehouse-sdk'
 *     const sbx = await Sandbox.create()
 *     console.log((await sbx.commands.run('echo hello')).stdout)
 *     await sbx.kill()
 *
 * The daemon is found through SAFEHOUSE_URL and the key through SAFEHOUSE_API_KEY (or the
 * `url` and `apiKey` options); with neither, the `safehouse` binary's local daemon.
 */
export { Sandbox } from './sandbox.js'
export type { CreateOptions } from './sandbox.js'
export { CommandHandle, Commands, Pty } from './commands.js'
export type { BackgroundOptions, Cmd, RunOptions, Signal } from './commands.js'
export { Filesystem, WatchHandle } from './files.js'
export type { WriteData } from './files.js'
export { DEFAULT_URL } from './config.js'
export type { ConnectionOptions } from './config.js'
export * from './errors.js'
export type * from './models.js'
