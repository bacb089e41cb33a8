// Regenerates src/gen into a temporary directory with the pinned buf and
// protoc-gen-es and compares it with the committed files. Exits non-zero
// (listing the differences) when they differ: run `npm run generate`.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = path.join(packageDir, "node_modules", ".bin");
const tmp = mkdtempSync(path.join(tmpdir(), "recur-ts-gen-"));

function files(dir, base = dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out = out.concat(files(full, base));
    else out.push(path.relative(base, full));
  }
  return out.sort();
}

try {
  const buf = spawnSync(path.join(bin, process.platform === "win32" ? "buf.cmd" : "buf"), ["generate", "--template", "buf.gen.yaml", "-o", tmp], {
    cwd: packageDir,
    stdio: "inherit",
    env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH ?? ""}` },
  });
  if (buf.status !== 0) {
    console.error(`buf generate failed (${buf.error ?? `exit ${buf.status}`})`);
    process.exit(2);
  }
  const committed = path.join(packageDir, "src", "gen");
  const fresh = path.join(tmp, "src", "gen");
  const a = files(committed);
  const b = files(fresh);
  const problems = [];
  for (const f of a) if (!b.includes(f)) problems.push(`src/gen/${f}: committed but no longer generated`);
  for (const f of b) {
    if (!a.includes(f)) problems.push(`src/gen/${f}: generated but not committed`);
    else if (readFileSync(path.join(committed, f), "utf8") !== readFileSync(path.join(fresh, f), "utf8")) {
      problems.push(`src/gen/${f}: differs from what the protos generate`);
    }
  }
  if (problems.length > 0) {
    console.error(`Generated code is out of date:\n  ${problems.join("\n  ")}\nRun \`npm run generate\` in clients/typescript and commit src/gen.`);
    process.exit(1);
  }
  console.log(`src/gen is up to date (${a.length} files).`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
