// The CLI tests run the compiled command as a user would: build it once first.
// Type errors are the type check's business (npm run typecheck); tsc still emits.
import { spawnSync } from 'node:child_process';

export default function setup(): void {
  spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'ignore' });
}
