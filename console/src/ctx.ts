// What every view is handed.

import { Api, Whoami } from './api';

export interface Ctx {
  api: Api;
  who: Whoami;
  /** Routes exist in the daemon's OpenAPI document (e.g. pause, once persistence lands). */
  routes: Set<string>;
  navigate(hash: string): void;
  /** A message at the bottom of the page; `error` ones stay until dismissed. */
  toast(message: string, kind?: 'info' | 'error'): void;
}
