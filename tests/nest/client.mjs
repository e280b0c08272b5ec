// Scriptable Nest ClientTCP driver for interop tests.
//
//   node client.mjs <host> <port>  < ops.json
//   TRANSPORT=nats NATS_URL=nats://127.0.0.1:4222 node client.mjs  < ops.json
//     (ClientNats instead: host/port arguments are ignored; one NATS connection)
//   TRANSPORT=rmq RMQ_URL=amqp://127.0.0.1:5672 RMQ_QUEUE=user_service node client.mjs < ops.json
//     (ClientRMQ: requests to the queue, replies through amq.rabbitmq.reply-to; an op's
//      "rmq" field, {headers, priority, ...}, is sent with RmqRecordBuilder's setOptions)
//
// stdin: a JSON array of operations, e.g.
//   [{"op":"send","pattern":"sum","data":[1,2,3]},
//    {"op":"emit","pattern":"log","data":"求和1111"},
//    {"op":"send","pattern":{"cmd":"sum"},"data":[1,2],"timeoutMs":1000}]
// All ops run concurrently over ONE ClientProxy (one TCP connection).
// stdout: exactly one line of JSON, an array with one entry per op:
//   {"ok": <value>}  success (emit: {"ok": null})
//   {"err": <raw error value>}  (Error instances as {"message","name"};
//                                {"timeout":true} after timeoutMs, default 5000)
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { Logger } from '@nestjs/common';
import { ClientProxyFactory, RmqRecordBuilder, Transport } from '@nestjs/microservices';

// stdout carries the one result line: Nest's info logs ("[Nest] … Successfully connected
// to RMQ broker") would be taken for it. Errors still go to stderr.
Logger.overrideLogger(['error']);
import { lastValueFrom } from 'rxjs';

const [host = '127.0.0.1', portArg = '8888'] = process.argv.slice(2);
const port = Number(portArg);

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function errValue(e) {
  if (e instanceof Error) {
    const out = { message: e.message, name: e.name };
    if (e.code !== undefined) out.code = e.code;
    return out;
  }
  return e === undefined ? null : e;
}

const TIMEOUT = Symbol('timeout');

async function runOp(client, op) {
  const timeoutMs = op.timeoutMs ?? 5000;
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(TIMEOUT), timeoutMs);
  });
  const data = op.rmq ? new RmqRecordBuilder(op.data).setOptions(op.rmq).build() : op.data;
  op = { ...op, data };
  const work = (async () => {
    switch (op.op) {
      case 'send':
        return { ok: await lastValueFrom(client.send(op.pattern, op.data)) };
      case 'collect':
        // Every item of a streamed reply, then how it ended.
        return {
          ok: await new Promise((resolve) => {
            const items = [];
            client.send(op.pattern, op.data).subscribe({
              next: (v) => items.push(v === undefined ? null : v),
              error: (e) => resolve({ items, err: errValue(e) }),
              complete: () => resolve({ items, complete: true }),
            });
          }),
        };
      case 'emit':
        await lastValueFrom(client.emit(op.pattern, op.data), {
          defaultValue: undefined,
        });
        return { ok: null };
      default:
        throw new Error(`unknown op ${JSON.stringify(op.op)}`);
    }
  })().then(
    (r) => (r.ok === undefined ? { ok: null } : r),
    (e) => ({ err: errValue(e) }),
  );
  const result = await Promise.race([work, timeout]);
  clearTimeout(timer);
  return result === TIMEOUT ? { err: { timeout: true } } : result;
}

async function main() {
  const ops = JSON.parse(await readStdin());
  if (!Array.isArray(ops)) throw new Error('stdin must be a JSON array of ops');
  const transport = (process.env.TRANSPORT || 'tcp').toLowerCase();
  const client =
    transport === 'nats'
      ? ClientProxyFactory.create({
          transport: Transport.NATS,
          options: { servers: [process.env.NATS_URL || 'nats://127.0.0.1:4222'] },
        })
      : transport === 'rmq'
        ? ClientProxyFactory.create({
            transport: Transport.RMQ,
            options: {
              urls: [process.env.RMQ_URL || 'amqp://127.0.0.1:5672'],
              queue: process.env.RMQ_QUEUE || 'user_service',
            },
          })
        : tcpClient();
  const results = await Promise.all(ops.map((op) => runOp(client, op)));
  // Wait for the write to drain: process.exit() would cut output over 64 KiB on a pipe.
  await new Promise((resolve) => process.stdout.write(JSON.stringify(results) + '\n', resolve));
  await client.close();
}

function tcpClient() {
  return ClientProxyFactory.create({
    transport: Transport.TCP,
    options: {
      host,
      port,
      // TLS_CA (PEM file): connect over TLS trusting that CA (Nest's tlsOptions).
      ...(process.env.TLS_CA && {
        tlsOptions: { ca: readFileSync(process.env.TLS_CA) },
      }),
    },
  });
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(2);
  },
);
