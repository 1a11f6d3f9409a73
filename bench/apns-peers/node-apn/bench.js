// Sends pushes through @parse/node-apn to an APNs-compatible endpoint at 1, 100 and
// 1,000 in flight and prints one markdown row per level (pushes/s, p50, p99).
//
// Usage: node bench.js <url> <ca.pem> <key.p8> [seconds]
// (key id KEY1234567, team TEAM123456, topic com.example.app: the stand-in's
// benchmark settings). node-apn takes a custom address, port and CA as options, so
// it runs unmodified. NODE_APN_LEVELS=100,1000 runs only those levels;
// NODE_APN_PAYLOAD_BYTES=300 pads the alert with a custom "webex" string to that many
// bytes of JSON, the size of webex-push's bench alert.
'use strict';

const fs = require('fs');
const apn = require('@parse/node-apn');

const [url, caFile, keyFile, secondsArg] = process.argv.slice(2);
if (!url || !caFile || !keyFile) {
  console.error('usage: node bench.js <url> <ca.pem> <key.p8> [seconds]');
  process.exit(2);
}
const target = new URL(url);
const seconds = Number(secondsArg || 5);

function provider() {
  return new apn.Provider({
    token: { key: fs.readFileSync(keyFile), keyId: 'KEY1234567', teamId: 'TEAM123456' },
    address: target.hostname,
    port: Number(target.port || 443),
    ca: fs.readFileSync(caFile),
    production: true,
  });
}

let padding = null;

function notification() {
  const note = bare();
  if (padding === null) {
    const target = Number(process.env.NODE_APN_PAYLOAD_BYTES || 0);
    const probe = bare();
    probe.payload = { webex: '' };
    padding = 'x'.repeat(Math.max(0, target - JSON.stringify(probe).length));
  }
  if (padding.length > 0) note.payload = { webex: padding };
  return note;
}

function bare() {
  const note = new apn.Notification();
  note.topic = 'com.example.app';
  note.pushType = 'alert';
  note.priority = 10;
  note.expiry = Math.floor(Date.now() / 1000) + 3600;
  note.alert = { title: 'New message', body: 'ada@example.com' };
  note.sound = 'default';
  return note;
}

async function drive(apnProvider, inFlight, ms) {
  const deadline = performance.now() + ms;
  const latencies = [];
  let failed = 0;
  async function worker(w) {
    const token = (0x1000 + w).toString(16).padStart(64, '0');
    while (performance.now() < deadline) {
      const started = performance.now();
      const result = await apnProvider.send(notification(), token);
      latencies.push(performance.now() - started);
      if (result.failed.length > 0) failed += 1;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, (_, w) => worker(w)));
  return { latencies, failed };
}

async function main() {
  const levels = (process.env.NODE_APN_LEVELS || '1,100,1000').split(',').map(Number);
  for (const inFlight of levels) {
    const apnProvider = provider();
    const warm = await apnProvider.send(notification(), '0'.repeat(60) + '1000');
    if (warm.failed.length > 0) {
      throw new Error(`warm-up failed: ${JSON.stringify(warm.failed[0].response || warm.failed[0].error)}`);
    }
    await drive(apnProvider, inFlight, 500);
    const started = performance.now();
    const { latencies, failed } = await drive(apnProvider, inFlight, seconds * 1000);
    const elapsed = (performance.now() - started) / 1000;
    latencies.sort((a, b) => a - b);
    const at = q => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
    console.log(
      `| @parse/node-apn 6.5 (node ${process.versions.node}) | ${inFlight} | ${latencies.length} | ${failed} | ` +
        `${(latencies.length / elapsed).toFixed(0)} | ${at(0.5).toFixed(2)} | ${at(0.99).toFixed(2)} |`
    );
    await apnProvider.shutdown();
  }
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
