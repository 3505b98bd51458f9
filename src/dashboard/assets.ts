import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The page's files ship in the package as they are (assets/dashboard, listed in package.json
 * "files"): no CDN, no build step, so the dashboard works on a host with no internet. Found from
 * this module's place both when run from source and from dist/.
 */
export const UI_DIR = join(packageRoot(), 'assets', 'dashboard');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

export interface Asset {
  body: string;
  type: string;
}

const cache = new Map<string, Asset>();

/** One of the page's files by name (no paths: nothing outside UI_DIR can be asked for). */
export function readAsset(name: string): Asset | undefined {
  if (!/^[a-z0-9-]+\.(html|js|css|svg)$/.test(name)) return undefined;
  let asset = cache.get(name);
  if (!asset) {
    const path = join(UI_DIR, name);
    if (!existsSync(path)) return undefined;
    asset = { body: readFileSync(path, 'utf8'), type: TYPES[name.slice(name.lastIndexOf('.'))]! };
    cache.set(name, asset);
  }
  return asset;
}

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'assets', 'dashboard'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('mailq: cannot find the dashboard page files (assets/dashboard) in the package');
    dir = parent;
  }
  return dir;
}
