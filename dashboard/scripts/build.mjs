// Bundles the dashboard (src/main.ts with the TypeScript client's browser
// entry, from source) into dist/, which is committed: the recur binary
// embeds dist/ so that building or running the server needs no Node.
//
//   node scripts/build.mjs           # rebuild dist/
//   node scripts/build.mjs --check   # fail if dist/ differs from a fresh build (CI)
//
// The output is deterministic for pinned versions (package-lock.json): no
// timestamps, no source maps with absolute paths.
import { build } from "esbuild";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "recur-dashboard-")) : join(root, "dist");

// The client's sources import the protobuf and Connect runtimes by name:
// resolve them from here, whatever clients/typescript/node_modules holds,
// so the bundle has one copy of each, at the versions pinned here.
const fromDashboard = {
  name: "runtimes-from-dashboard",
  setup(b) {
    b.onResolve({ filter: /^@(bufbuild\/protobuf|connectrpc\/connect)(\/|$)/ }, (args) => {
      if (args.pluginData === "dashboard") return undefined;
      return b.resolve(args.path, { kind: args.kind, resolveDir: root, pluginData: "dashboard" });
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(root, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  outfile: join(out, "app.js"),
  legalComments: "none",
  // The client from its sources (its browser-safe entry), so nothing
  // needs building in clients/typescript first.
  alias: { "@recur/client": join(root, "../clients/typescript/src/index.ts") },
  plugins: [fromDashboard],
  logLevel: "warning",
});
copyFileSync(join(root, "src/index.html"), join(out, "index.html"));
copyFileSync(join(root, "src/app.css"), join(out, "app.css"));

if (check) {
  const committed = join(root, "dist");
  const files = readdirSync(out).sort();
  const stale = files.filter((f) => {
    try {
      return !readFileSync(join(out, f)).equals(readFileSync(join(committed, f)));
    } catch {
      return true;
    }
  });
  const extra = readdirSync(committed).filter((f) => !files.includes(f));
  rmSync(out, { recursive: true, force: true });
  if (stale.length || extra.length) {
    console.error(`dashboard/dist is stale (${[...stale, ...extra].join(", ")}): run npm run build in dashboard/ and commit dist/`);
    process.exit(1);
  }
  console.log(`dashboard/dist is up to date (${files.length} files).`);
}
