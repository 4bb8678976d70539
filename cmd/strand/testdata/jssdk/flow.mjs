// End-to-end flow against a Strand homeserver with the real matrix-js-sdk.
//
//   node flow.mjs http://127.0.0.1:8008      (or STRAND_BASE_URL=... node flow.mjs)
//
// Two clients (alice and bob) register through user-interactive auth, log in
// with a password, create and join rooms (by room ID and by alias), run the
// SDK's live /sync, exchange messages, back-paginate, and exercise presence,
// typing and read receipts, exchange an end-to-end encrypted message with
// the SDK's Rust crypto, then log out. Exit status 0 means every step
// passed; otherwise the first failing step is printed with the HTTP
// exchanges that led to it. STRAND_JSSDK_VERBOSE=1 also prints the SDK's log.
//
// Run by cmd/strand/jssdk_test.go (go test ./cmd/strand -run TestMatrixJSSDK).

import { readFileSync } from "node:fs";

const GLOBAL_TIMEOUT_MS = Number(process.env.STRAND_JSSDK_TIMEOUT_MS || 60000);
const STEP_TIMEOUT_MS = 15000;
const verbose = !!process.env.STRAND_JSSDK_VERBOSE;

// ---- output -------------------------------------------------------------

const out = (line) => process.stdout.write(line + "\n");
const started = Date.now();
const elapsed = () => ((Date.now() - started) / 1000).toFixed(2).padStart(6) + "s";

// The SDK logs through console at debug level; keep its lines in a ring
// buffer (printed on failure) instead of flooding the test output.
const sdkLog = [];
for (const m of ["log", "debug", "info", "warn", "error", "trace"]) {
  console[m] = (...args) => {
    const line = `[sdk ${m}] ` + args.map(fmtArg).join(" ");
    if (verbose) process.stderr.write(line + "\n");
    sdkLog.push(line.length > 600 ? line.slice(0, 600) + "…" : line);
    if (sdkLog.length > 60) sdkLog.shift();
  };
}
function fmtArg(a) {
  if (a instanceof Error) return `${a.name}: ${a.message}`;
  if (typeof a === "string") return a;
  try {
    return JSON.stringify(a);
  } catch {
    return String(a);
  }
}

// ---- HTTP trace ----------------------------------------------------------

// Every request the SDK makes goes through tracingFetch, so a failure can
// show the exact requests and responses (secrets redacted).
const trace = [];
const redact = (s) => s?.replace(/("(?:password|access_token|refresh_token)"\s*:\s*")[^"]*"/g, '$1***"').replace(/(access_token=)[^&]*/g, "$1***");
const trunc = (s, n = 700) => (s && s.length > n ? s.slice(0, n) + `… (${s.length} bytes)` : s);

function tracingFetch(who) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const method = (init.method || "GET").toUpperCase();
    const entry = {
      who,
      method,
      path: redact(decodeURIComponent(url.pathname) + url.search),
      req: typeof init.body === "string" ? trunc(redact(init.body)) : undefined,
      at: elapsed(),
    };
    trace.push(entry);
    if (trace.length > 400) trace.shift();
    try {
      const res = await fetch(input, init);
      entry.status = res.status;
      res
        .clone()
        .text()
        .then(
          (t) => (entry.res = trunc(redact(t))),
          () => {},
        );
      return res;
    } catch (e) {
      entry.status = `network error: ${e.message}`;
      throw e;
    }
  };
}

function fmtEntry(e) {
  let s = `  ${e.at} ${e.who.padEnd(5)} ${e.method} ${e.path} -> ${e.status ?? "(pending)"}`;
  if (e.req) s += `\n        request:  ${e.req}`;
  if (e.res !== undefined) s += `\n        response: ${e.res}`;
  return s;
}

// ---- failure -------------------------------------------------------------

let currentStep = "start-up";
let failed = false;

// FlowError is a failure this script detected itself: its message says
// everything, so no stack trace is printed for it.
class FlowError extends Error {}

function describe(err) {
  if (err && err.httpStatus !== undefined) {
    const url = err.url ? ` on ${redact(String(err.url))}` : "";
    return `HTTP ${err.httpStatus} ${err.errcode ?? ""}${url}: ${redact(JSON.stringify(err.data ?? {}))}`;
  }
  if (err instanceof FlowError) return err.message;
  return err?.stack || String(err);
}

function fail(err) {
  if (failed) return;
  failed = true;
  out(`FAIL ${currentStep}`);
  out(`     ${describe(err).replace(/\n/g, "\n     ")}`);
  const errors = trace.filter((e) => typeof e.status === "string" || e.status >= 400);
  if (errors.length) {
    out(`\nHTTP requests answered with an error (${errors.length}, last 15):`);
    for (const e of errors.slice(-15)) out(fmtEntry(e));
  }
  out(`\nLast HTTP requests (${Math.min(trace.length, 10)} of ${trace.length}):`);
  for (const e of trace.slice(-10)) out(fmtEntry(e));
  if (sdkLog.length) {
    out(`\nLast matrix-js-sdk log lines:`);
    for (const l of sdkLog.slice(-12)) out("  " + l);
  }
  process.exit(1);
}

process.on("unhandledRejection", (e) => fail(e));
process.on("uncaughtException", (e) => fail(e));
setTimeout(() => fail(new FlowError(`global timeout of ${GLOBAL_TIMEOUT_MS} ms exceeded`)), GLOBAL_TIMEOUT_MS);

async function step(name, fn) {
  currentStep = name;
  const t0 = Date.now();
  const r = await fn();
  out(`${elapsed()} ok   ${name} (${Date.now() - t0} ms)`);
  return r;
}

function assert(cond, msg) {
  if (!cond) throw new FlowError("assertion failed: " + msg);
}

// waitFor resolves with the first emission of event on emitter for which
// pred(...args) is true, or rejects after ms.
function waitFor(emitter, event, pred, what, ms = STEP_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      let ok;
      try {
        ok = pred(...args);
      } catch (e) {
        cleanup();
        reject(e);
        return;
      }
      if (ok) {
        cleanup();
        resolve(args);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new FlowError(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
    };
    emitter.on(event, onEvent);
  });
}

// ---- the flow ------------------------------------------------------------

const baseUrl = (process.argv[2] || process.env.STRAND_BASE_URL || "").replace(/\/+$/, "");
if (!baseUrl) {
  out("usage: node flow.mjs <homeserver base URL>   (or STRAND_BASE_URL)");
  process.exit(2);
}

const sdk = await import("matrix-js-sdk");
const { ClientEvent, RoomEvent, RoomMemberEvent, SyncState } = sdk;

const suffix = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
const password = "jssdk-wordpass-" + suffix;

function newClient(who) {
  return sdk.createClient({
    baseUrl,
    store: new sdk.MemoryStore(),
    timelineSupport: true,
    fetchFn: tracingFetch(who),
  });
}

// register follows user-interactive auth: the first request has no auth and
// must be answered 401 with the flows and a session; the second completes
// the m.login.dummy stage.
async function register(client, username) {
  let uia;
  try {
    const res = await client.registerRequest({ username, password });
    throw new FlowError(`register without auth answered 200, expected 401 with UIA flows: ${JSON.stringify(res)}`);
  } catch (e) {
    if (e.httpStatus !== 401) throw e;
    uia = e.data;
  }
  assert(Array.isArray(uia?.flows), `401 body has no flows: ${JSON.stringify(uia)}`);
  const dummy = uia.flows.some((f) => Array.isArray(f.stages) && f.stages.length === 1 && f.stages[0] === "m.login.dummy");
  assert(dummy, `no single-stage m.login.dummy flow offered: ${JSON.stringify(uia.flows)}`);
  const auth = { type: "m.login.dummy" };
  if (uia.session) auth.session = uia.session;
  const res = await client.registerRequest({ username, password, auth, initial_device_display_name: "jssdk register" });
  assert(typeof res.user_id === "string" && res.user_id.startsWith(`@${username}:`), `register user_id: ${JSON.stringify(res.user_id)}`);
  assert(typeof res.access_token === "string" && res.access_token, "register returned no access_token");
  return res.user_id;
}

async function login(client, username, userId) {
  const res = await client.login("m.login.password", {
    identifier: { type: "m.id.user", user: username },
    password,
    initial_device_display_name: "jssdk",
  });
  assert(res.user_id === userId, `login user_id ${res.user_id}, want ${userId}`);
  assert(res.access_token && res.device_id, `login response lacks access_token or device_id: ${Object.keys(res)}`);
  assert(client.getUserId() === userId && client.getAccessToken() === res.access_token, "client did not adopt the login credentials");
  const who = await client.whoami();
  assert(who.user_id === userId, `whoami ${JSON.stringify(who)}`);
  assert(who.device_id === res.device_id, `whoami device_id ${who.device_id}, login gave ${res.device_id}`);
}

async function main() {
  const alice = newClient("alice");
  const bob = newClient("bob");
  const aliceName = "jssdk_alice_" + suffix;
  const bobName = "jssdk_bob_" + suffix;
  let aliceId, bobId, server;

  await step("versions", async () => {
    const v = await alice.getVersions();
    assert(Array.isArray(v.versions) && v.versions.length > 0, `versions: ${JSON.stringify(v)}`);
  });

  await step("register alice and bob (UIA: 401 flows, then m.login.dummy)", async () => {
    aliceId = await register(alice, aliceName);
    bobId = await register(bob, bobName);
    server = aliceId.slice(aliceId.indexOf(":") + 1);
  });

  await step("log in both with m.login.password", async () => {
    await login(alice, aliceName, aliceId);
    await login(bob, bobName, bobId);
  });

  const stopSyncWatch = [];
  const privAlias = `jssdk_priv_${suffix}`;
  const pubAlias = `jssdk_pub_${suffix}`;
  let privId, pubId;

  await step("alice creates a private room with an alias", async () => {
    const res = await alice.createRoom({ room_alias_name: privAlias, preset: "private_chat", name: "jssdk private" });
    privId = res.room_id;
    assert(typeof privId === "string" && privId.startsWith("!"), `createRoom room_id: ${JSON.stringify(res)}`);
    const resolved = await alice.getRoomIdForAlias(`#${privAlias}:${server}`);
    assert(resolved.room_id === privId, `alias resolves to ${resolved.room_id}, want ${privId}`);
  });

  await step("alice invites bob, bob joins by room ID", async () => {
    await alice.invite(privId, bobId);
    const room = await bob.joinRoom(privId);
    assert(room.roomId === privId, `joinRoom returned ${room.roomId}, want ${privId}`);
    const members = await alice.getJoinedRoomMembers(privId);
    assert(members.joined?.[bobId], `bob not in joined_members: ${JSON.stringify(members)}`);
  });

  await step("alice creates a public room with an alias, bob joins by alias", async () => {
    const res = await alice.createRoom({ room_alias_name: pubAlias, preset: "public_chat", name: "jssdk public" });
    pubId = res.room_id;
    assert(typeof pubId === "string" && pubId.startsWith("!"), `createRoom room_id: ${JSON.stringify(res)}`);
    const room = await bob.joinRoom(`#${pubAlias}:${server}`);
    assert(room.roomId === pubId, `joinRoom(#${pubAlias}:${server}) returned ${room.roomId}, want ${pubId}`);
    const members = await alice.getJoinedRoomMembers(pubId);
    assert(members.joined?.[bobId], `bob not in joined_members: ${JSON.stringify(members)}`);
  });

  const HISTORY = 15;
  const historyBody = (i) => `history ${i} ${suffix}`;
  await step(`alice sends ${HISTORY} messages before syncing (history to back-paginate)`, async () => {
    for (let i = 0; i < HISTORY; i++) {
      const { event_id } = await alice.sendTextMessage(privId, historyBody(i));
      assert(event_id?.startsWith("$"), `send returned event_id ${event_id}`);
    }
  });

  await step("start live sync for both (initialSyncLimit 10), wait for PREPARED", async () => {
    // From here until logout, a sync loop that fails fails the flow at
    // once (with the failing request) instead of leaving later steps to time out.
    for (const [client, who] of [
      [alice, "alice"],
      [bob, "bob"],
    ]) {
      const onSync = (state, _prev, data) => {
        if (state === SyncState.Error || state === SyncState.Reconnecting) {
          fail(new FlowError(`${who}'s sync loop went to ${state}: ${describe(data?.error)}`));
        }
      };
      client.on(ClientEvent.Sync, onSync);
      stopSyncWatch.push(() => client.off(ClientEvent.Sync, onSync));
    }
    const prepared = (client, who) => waitFor(client, ClientEvent.Sync, (state) => state === SyncState.Prepared, `${who}'s sync to reach PREPARED`);
    const p = Promise.all([prepared(alice, "alice"), prepared(bob, "bob")]);
    await alice.startClient({ initialSyncLimit: 10 });
    await bob.startClient({ initialSyncLimit: 10 });
    await p;
    for (const [client, who] of [
      [alice, "alice"],
      [bob, "bob"],
    ]) {
      for (const id of [privId, pubId]) {
        const room = client.getRoom(id);
        assert(room, `${who}'s initial sync has no room ${id}`);
        assert(room.getMyMembership() === "join", `${who}'s membership in ${id} is ${room.getMyMembership()}`);
      }
    }
    const bobsPriv = bob.getRoom(privId);
    assert(bobsPriv.getMember(aliceId)?.membership === "join", "bob's sync state does not show alice joined to the private room");
    assert(bobsPriv.name === "jssdk private", `bob sees the private room named ${JSON.stringify(bobsPriv.name)}`);
  });

  // liveMessage waits until client's live timeline of roomId shows a message
  // with body from sender.
  const liveMessage = (client, roomId, sender, body, who) =>
    waitFor(
      client,
      RoomEvent.Timeline,
      (ev, room, toStart) => !toStart && room?.roomId === roomId && ev.getSender() === sender && ev.getContent().body === body,
      `${who} to see ${JSON.stringify(body)} from ${sender} in the live timeline of ${roomId}`,
    ).then(([ev]) => ev);

  let aliceMsgOnBob; // alice's message as bob's client has it: the receipt target
  await step("alice -> bob and bob -> alice messages through the live sync timeline", async () => {
    const bodyA = `hello bob from alice ${suffix}`;
    const seenByBob = liveMessage(bob, privId, aliceId, bodyA, "bob");
    const sentA = await alice.sendTextMessage(privId, bodyA);
    aliceMsgOnBob = await seenByBob;
    assert(aliceMsgOnBob.getId() === sentA.event_id, `bob saw ${aliceMsgOnBob.getId()}, alice sent ${sentA.event_id}`);

    const bodyB = `hello alice from bob ${suffix}`;
    const seenByAlice = liveMessage(alice, privId, bobId, bodyB, "alice");
    const sentB = await bob.sendTextMessage(privId, bodyB);
    const ev = await seenByAlice;
    assert(ev.getId() === sentB.event_id, `alice saw ${ev.getId()}, bob sent ${sentB.event_id}`);

    const bodyPub = `hello in public from bob ${suffix}`;
    const seenInPub = liveMessage(alice, pubId, bobId, bodyPub, "alice");
    const sentPub = await bob.sendTextMessage(pubId, bodyPub);
    const evPub = await seenInPub;
    assert(evPub.getId() === sentPub.event_id, `alice saw ${evPub.getId()} in the public room, bob sent ${sentPub.event_id}`);
  });

  await step("alice back-paginates the private room with scrollback", async () => {
    const room = alice.getRoom(privId);
    const bodies = () =>
      room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);
    assert(
      !bodies().includes(historyBody(0)),
      "the initial sync timeline already holds the oldest message: initialSyncLimit (filter room.timeline.limit=10) was ignored",
    );
    const before = room.getLiveTimeline().getEvents().length;
    for (let i = 0; i < 10 && !bodies().includes(historyBody(0)); i++) {
      assert(room.oldState.paginationToken !== null, `reached the start of the room after ${i} scrollbacks without finding ${JSON.stringify(historyBody(0))}`);
      await alice.scrollback(room, 10);
    }
    const got = bodies();
    const history = got.filter((b) => b.startsWith("history "));
    const want = Array.from({ length: HISTORY }, (_, i) => historyBody(i));
    assert(
      JSON.stringify(history) === JSON.stringify(want),
      `history in the timeline after scrollback (${before} -> ${room.getLiveTimeline().getEvents().length} events):\n got ${JSON.stringify(history)}\nwant ${JSON.stringify(want)}`,
    );
    for (let i = 0; i < 5 && room.oldState.paginationToken !== null; i++) await alice.scrollback(room, 30);
    const first = room.getLiveTimeline().getEvents()[0];
    assert(first?.getType() === "m.room.create", `after paginating to the start the first event is ${first?.getType()}, want m.room.create`);
  });

  await step("alice sets presence online; bob sees it through sync", async () => {
    const status = `jssdk status ${suffix}`;
    const user = () => bob.getUser(aliceId);
    const seen = () => user()?.presence === "online" && user()?.presenceStatusMsg === status;
    // The SDK emits User.presence only when the presence value changes, and
    // alice's sync has already made her online; every m.presence event from
    // /sync is also emitted as ClientEvent.Event after the User is updated.
    const seenByBob = waitFor(
      bob,
      ClientEvent.Event,
      (ev) => ev.getType() === "m.presence" && ev.getSender() === aliceId && seen(),
      `bob to see alice's presence online with status_msg ${JSON.stringify(status)} (m.presence in /sync)`,
    );
    await alice.setPresence({ presence: "online", status_msg: status });
    await seenByBob;
    const p = await bob.getPresence(aliceId);
    assert(p.presence === "online", `GET presence of alice: ${JSON.stringify(p)}`);
  });

  await step("alice types; bob sees m.typing (RoomMember.typing) start and stop", async () => {
    const typing = (want) =>
      waitFor(
        bob,
        RoomMemberEvent.Typing,
        (_ev, member) => member.roomId === privId && member.userId === aliceId && member.typing === want,
        `bob to see alice typing=${want} in ${privId}`,
      );
    let seen = typing(true);
    await alice.sendTyping(privId, true, 30000);
    await seen;
    seen = typing(false);
    await alice.sendTyping(privId, false);
    await seen;
  });

  await step("bob sends a read receipt; alice sees it (Room.receipt)", async () => {
    const eventId = aliceMsgOnBob.getId();
    const seen = waitFor(
      alice,
      RoomEvent.Receipt,
      (ev, room) => room.roomId === privId && ev.getContent()?.[eventId]?.["m.read"]?.[bobId] !== undefined,
      `alice to see bob's m.read receipt for ${eventId}`,
    );
    await bob.sendReadReceipt(aliceMsgOnBob);
    await seen;
    const r = alice.getRoom(privId).getReadReceiptForUserId(bobId, true);
    assert(r?.eventId === eventId, `alice's room has bob's receipt at ${r?.eventId}, want ${eventId}`);
  });

  await step("alice uploads a file; bob downloads it through its mxc:// URI", async () => {
    const bytes = new TextEncoder().encode("file body " + suffix);
    const { content_uri: uri } = await alice.uploadContent(new Blob([bytes], { type: "text/plain" }), { name: "note.txt", type: "text/plain" });
    assert(typeof uri === "string" && uri.startsWith(`mxc://${server}/`), `content_uri ${uri}`);
    const url = bob.mxcUrlToHttp(uri, undefined, undefined, undefined, false, true, true);
    const res = await tracingFetch("bob")(url, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
    const body = await res.text();
    assert(res.status === 200 && body === "file body " + suffix, `download of ${uri}: ${res.status} ${body}`);
    assert(res.headers.get("content-type") === "text/plain", `content type ${res.headers.get("content-type")}`);
  });

  // End-to-end encryption with the SDK's own (Rust) crypto: each user logs
  // in a new device that uploads its keys; alice sends into an encrypted
  // room, which makes her client fetch bob's device keys, claim a one-time
  // key, and send him the room key as a to-device message; bob's client
  // must decrypt the message with it.
  const cryptoClients = [];
  await step("a new device of each user sets up end-to-end encryption", async () => {
    for (const [name, id, who] of [
      [aliceName, aliceId, "alice"],
      [bobName, bobId, "bob"],
    ]) {
      const res = await newClient(who).loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: name },
        password,
        initial_device_display_name: "jssdk crypto",
      });
      const c = sdk.createClient({
        baseUrl,
        userId: id,
        deviceId: res.device_id,
        accessToken: res.access_token,
        store: new sdk.MemoryStore(),
        fetchFn: tracingFetch(who),
      });
      await c.initRustCrypto({ useIndexedDB: false });
      const synced = waitFor(c, ClientEvent.Sync, (state) => state === SyncState.Prepared, `${who}'s crypto client's first sync`);
      await c.startClient({ initialSyncLimit: 5 });
      await synced;
      cryptoClients.push(c);
    }
    // The clients upload their keys in the background after starting.
    const [ac, bc] = cryptoClients;
    for (let t0 = Date.now(); ; await new Promise((r) => setTimeout(r, 200))) {
      const devices = await ac.getCrypto().getUserDeviceInfo([bobId], true);
      if (devices.get(bobId)?.has(bc.getDeviceId())) break;
      assert(Date.now() - t0 < STEP_TIMEOUT_MS, `alice cannot see bob's new device ${bc.getDeviceId()} after ${STEP_TIMEOUT_MS} ms`);
    }
  });

  await step("bob decrypts alice's message in an encrypted room", async () => {
    const [ac, bc] = cryptoClients;
    const { room_id: roomId } = await ac.createRoom({
      invite: [bobId],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    if (!bc.getRoom(roomId)) await waitFor(bc, ClientEvent.Room, (room) => room.roomId === roomId, "bob's crypto client to see the invite");
    await bc.joinRoom(roomId);
    await waitFor(ac, RoomMemberEvent.Membership, (_, m) => m.roomId === roomId && m.userId === bobId && m.membership === "join", "alice to see bob join");
    const decrypted = waitFor(bc, sdk.MatrixEventEvent.Decrypted, (ev, err) => !err && ev.getRoomId() === roomId && ev.getContent()?.body === "secret " + suffix, "bob to decrypt alice's message", 20000);
    const sent = await ac.sendTextMessage(roomId, "secret " + suffix);
    const raw = await (await tracingFetch("bob")(`${baseUrl}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(sent.event_id)}`, { headers: { Authorization: `Bearer ${bc.getAccessToken()}` } })).json();
    assert(raw.type === "m.room.encrypted" && !JSON.stringify(raw).includes("secret " + suffix), `the server holds the message in the clear: ${JSON.stringify(raw)}`);
    await decrypted;
    for (const c of cryptoClients) c.stopClient();
  });

  await step("both log out; the old access tokens are refused", async () => {
    stopSyncWatch.forEach((f) => f());
    for (const [client, who] of [
      [alice, "alice"],
      [bob, "bob"],
    ]) {
      const token = client.getAccessToken();
      await client.logout(true);
      const res = await tracingFetch(who)(`${baseUrl}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${token}` } });
      const body = await res.json().catch(() => ({}));
      assert(res.status === 401 && body.errcode === "M_UNKNOWN_TOKEN", `whoami with ${who}'s old token: ${res.status} ${JSON.stringify(body)}`);
    }
  });
}

const sdkVersion = JSON.parse(readFileSync(new URL("./node_modules/matrix-js-sdk/package.json", import.meta.url), "utf8")).version;
out(`matrix-js-sdk ${sdkVersion}, node ${process.version}, homeserver ${baseUrl}`);
main().then(() => {
  out(`${elapsed()} PASS`);
  process.exit(0);
}, fail);
