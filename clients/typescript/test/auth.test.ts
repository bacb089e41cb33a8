// createRecurClient's credentials: a bearer token (loopback, no TLS), and
// TLS with a private CA plus a client certificate (mTLS).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, Scope, createRecurClient } from "../src/node.js";
import { recurBin, startServer, uniqueId, type RecurServer } from "./harness.js";

const dir = mkdtempSync(path.join(tmpdir(), "recur-ts-auth-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function withCode(code: Code) {
  return (err: unknown) => err instanceof ConnectError && err.code === code;
}

/** `recur token new`: the token and its access-file entry. */
function newToken(name: string, scopes: string): { token: string; entry: string } {
  const out = execFileSync(recurBin, ["token", "new", "--name", name, "--scopes", scopes], { encoding: "utf8" });
  const token = out.split("\n")[0]!.trim();
  const entry = out.split("\n").filter((l) => l.startsWith("  ")).join("\n");
  assert.match(token, /^recur_/);
  return { token, entry };
}

describe("bearer tokens", () => {
  let server: RecurServer;
  const reader = newToken("ts-reader", "read");
  const writer = newToken("ts-writer", "read,write");

  before(async () => {
    const file = path.join(dir, "access.yaml");
    writeFileSync(file, `tokens:\n${reader.entry}\n${writer.entry}\n`);
    server = await startServer({ args: ["--auth-tokens", file] });
  });
  after(() => server?.stop());

  it("WhoAmI names the token and its scopes", async () => {
    const me = await createRecurClient({ baseUrl: server.baseUrl, token: reader.token }).whoAmI({});
    assert.equal(me.name, "ts-reader");
    assert.deepEqual(me.scopes, [Scope.READ]);
  });

  it("no token is UNAUTHENTICATED, a missing scope PERMISSION_DENIED", async () => {
    await assert.rejects(createRecurClient({ baseUrl: server.baseUrl }).listTasks({}), withCode(Code.Unauthenticated));
    const spec = {
      schedule: { cadence: { case: "every" as const, value: { seconds: 3600n } } },
      action: { kind: { case: "http" as const, value: { url: "http://127.0.0.1:9/" } } },
    };
    const readOnly = createRecurClient({ baseUrl: server.baseUrl, token: reader.token });
    await assert.rejects(readOnly.registerTask({ taskId: uniqueId("auth"), spec }), withCode(Code.PermissionDenied));
    const task = await createRecurClient({ baseUrl: server.baseUrl, token: writer.token }).registerTask({ taskId: uniqueId("auth"), spec });
    assert.equal((await readOnly.getTask({ taskId: task.taskId })).taskId, task.taskId);
  });
});

const openssl = spawnSync("openssl", ["version"]).status === 0;

describe("TLS and mTLS", { skip: openssl ? false : "openssl not found" }, () => {
  let server: RecurServer;
  const file = (name: string) => path.join(dir, name);
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });

  before(async () => {
    // A CA, a server certificate for 127.0.0.1 and a client certificate.
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=recur test CA", "-keyout", "ca-key.pem", "-out", "ca.pem");
    for (const [name, subj, ext] of [
      ["server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"],
      ["client", "/CN=ts-client/O=recur", "extendedKeyUsage=clientAuth"],
    ] as const) {
      ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subj,
        "-keyout", `${name}-key.pem`, "-out", `${name}.csr`);
      writeFileSync(file(`${name}.ext`), `${ext}\n`);
      ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    }
    server = await startServer({
      args: ["--tls-cert", file("server.pem"), "--tls-key", file("server-key.pem"), "--tls-client-ca", file("ca.pem")],
      tls: { ca: readFileSync(file("ca.pem")), cert: readFileSync(file("client.pem")), key: readFileSync(file("client-key.pem")) },
    });
  });
  after(() => server?.stop());

  it("connects with ca, cert and key; the certificate's subject is the caller", async () => {
    const client = createRecurClient({
      baseUrl: `127.0.0.1:${server.port}`,
      ca: readFileSync(file("ca.pem")),
      cert: readFileSync(file("client.pem")),
      key: readFileSync(file("client-key.pem")),
    });
    const me = await client.whoAmI({});
    assert.match(me.name, /CN=ts-client/);
  });

  it("refuses a client without a certificate", async () => {
    const client = createRecurClient({ baseUrl: `https://127.0.0.1:${server.port}`, ca: readFileSync(file("ca.pem")) });
    await assert.rejects(client.whoAmI({}), (e: unknown) => e instanceof ConnectError);
  });
});
