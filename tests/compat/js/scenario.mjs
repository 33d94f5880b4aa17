// NHS's JavaScript MESH client (npm nhs-mesh-client) driven as its README shows, against the broker at MESH_URL.
// Run by tests/compat/test_js_client.py, which asserts on the one JSON object this prints last.
//
// MESH_JS_CLIENT  the folder `make js-client` installed the client into (its node_modules)
// MESH_URL        the broker's base URL
// MESH_CA         the PEM of the CA that signed the broker's certificate: verified, never ignored
// MESH_SENDER_CERT/KEY, MESH_RECEIVER_CERT/KEY  each mailbox's client certificate and key (the client's
//                 "integration mode", an agent per mailbox), optional
// SCENARIO        "round-trip" (every call the client has, both directions) or "bad-password"
import { createHash } from "crypto";
import { readFileSync } from "fs";
import { Agent } from "https";
import { join } from "path";
import { pathToFileURL } from "url";

const client = await import(
  pathToFileURL(join(process.env.MESH_JS_CLIENT, "node_modules", "nhs-mesh-client", "index.js")).href
);
const { handShake, sendMessage, sendChunkedMessage, getMessageCount, readMessage, markAsRead } = client;

const url = process.env.MESH_URL;
function agent(role) {
  const options = { ca: readFileSync(process.env.MESH_CA) };
  if (process.env[`MESH_${role}_CERT`]) {
    options.cert = readFileSync(process.env[`MESH_${role}_CERT`]);
    options.key = readFileSync(process.env[`MESH_${role}_KEY`]);
  }
  return new Agent(options);
}
const common = { url, mailboxPassword: "password", sharedKey: "TestKey" };
const sender = { ...common, mailboxID: "X26ABC1", agent: agent("SENDER") };
const recipient = { ...common, mailboxID: "X26ABC2", agent: agent("RECEIVER") };

// What a failed call returns: the client catches axios's error and hands it back.
function failure(error) {
  if (error && error.response) {
    return { status: error.response.status, data: error.response.data };
  }
  return { error: String(error && (error.code || error.message)) };
}

function sha256(text) {
  return createHash("sha256").update(text).digest("hex");
}

async function roundTrip() {
  const result = {};
  const handshake = await handShake(sender);
  result.handshake = handshake.status ?? failure(handshake);

  const plain = await sendMessage({ ...sender, message: "Hello from the JavaScript client", mailboxTarget: "X26ABC2" });
  result.plain = { status: plain.status, messageId: plain.data && plain.data.message_id };
  // compressed: the client gzips JSON.stringify(message) and says Content-Encoding: gzip.
  const gzipped = await sendMessage({ ...sender, message: "Hello, gzipped", mailboxTarget: "X26ABC2", compressed: true });
  result.gzipped = { status: gzipped.status, messageId: gzipped.data && gzipped.data.message_id };

  // The client cuts a file into 10 MB chunks and gzips each: 21 MB of text is three chunks.
  const line = "NHS number,practice,date of birth,result\n";
  const file = Buffer.from(line.repeat(Math.ceil((21 * 1024 * 1024) / line.length)));
  const chunked = await sendChunkedMessage({ ...sender, mailboxTarget: "X26ABC2", fileContent: file });
  result.chunked = {
    status: chunked.status ?? failure(chunked),
    messageId: chunked.data && chunked.data.message_id,
    sha256: sha256(file),
    size: file.length,
  };

  const inbox = await getMessageCount(recipient);
  result.inbox = { status: inbox.status, count: inbox.data.approx_inbox_count, messages: inbox.data.messages };

  result.read = {};
  for (const messageId of inbox.data.messages) {
    const message = await readMessage({ ...recipient, messageID: messageId });
    const body = typeof message.data === "string" ? message.data : JSON.stringify(message.data);
    const ack = await markAsRead({ ...recipient, message: messageId });
    result.read[messageId] = {
      status: message.status,
      size: body.length,
      text: body.length <= 100 ? body : undefined,
      sha256: sha256(body),
      chunkRange: message.headers["mex-chunk-range"],
      from: message.headers["mex-from"],
      workflowId: message.headers["mex-workflowid"],
      filename: message.headers["mex-filename"],
      acknowledged: ack.status,
    };
  }
  const after = await getMessageCount(recipient);
  result.after = { count: after.data.approx_inbox_count, messages: after.data.messages };
  return result;
}

async function badPassword() {
  const handshake = await handShake({ ...sender, mailboxPassword: "not the password" });
  const send = await sendMessage({ ...sender, mailboxPassword: "not the password", message: "x", mailboxTarget: "X26ABC2" })
    .catch((error) => error);
  return { handshake: failure(handshake), send: failure(send) };
}

const scenarios = { "round-trip": roundTrip, "bad-password": badPassword };
const outcome = await scenarios[process.env.SCENARIO]();
console.log(JSON.stringify(outcome));
