// Builds dist/ from src/ with esbuild: the script-tag build (auto-init,
// what the gateway serves at /sdk/tracker.js), the ES module, the
// TypeScript declarations and the SRI hash of the script-tag build.
//   node build.mjs [--outdir DIR]
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const at = process.argv.indexOf('--outdir');
const out = at > 0 ? process.argv[at + 1] : join(here, 'dist');
mkdirSync(out, { recursive: true });

const common = { bundle: true, minify: true, target: 'es2020', legalComments: 'none', logLevel: 'warning' };
await build({ ...common, entryPoints: [join(here, 'src/auto.js')], format: 'iife', outfile: join(out, 'tracker.min.js') });
await build({ ...common, entryPoints: [join(here, 'src/tracker.js')], format: 'esm', outfile: join(out, 'tracker.mjs') });
copyFileSync(join(here, 'src/tracker.d.ts'), join(out, 'tracker.d.ts'));
const sri = 'sha384-' + createHash('sha384').update(readFileSync(join(out, 'tracker.min.js'))).digest('base64');
writeFileSync(join(out, 'tracker.min.js.sri'), sri + '\n');
