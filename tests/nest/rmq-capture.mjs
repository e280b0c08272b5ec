// Captures Nest's RMQ wire for docs/rmq-wire.md: what ClientRMQ publishes (read off a
// queue nobody else consumes) and what ServerRMQ replies (read off a reply queue of
// ours), with the AMQP properties of every message.
//
//   RMQ_URL=amqp://127.0.0.1:5672 RMQ_QUEUE=user_service node rmq-capture.mjs
//   (a Nest user service must consume RMQ_QUEUE: TRANSPORT=rmq node user-service.mjs)
import 'reflect-metadata';
import amqp from 'amqplib';
import { ClientProxyFactory, RmqRecordBuilder, Transport } from '@nestjs/microservices';

const URL = process.env.RMQ_URL || 'amqp://127.0.0.1:5672';
const SERVICE = process.env.RMQ_QUEUE || 'user_service';
const TAP = 'nestling_capture_tap';

const show = (m) => ({
  body: m.content.toString(),
  properties: Object.fromEntries(Object.entries(m.properties).filter(([, v]) => v !== undefined)),
  routingKey: m.fields.routingKey,
  exchange: m.fields.exchange,
});

const conn = await amqp.connect(URL);
const ch = await conn.createChannel();
await ch.assertQueue(TAP, { durable: false });
await ch.purgeQueue(TAP);

// 1. What ClientRMQ publishes: a request, an event, a request with RmqRecordBuilder options.
const client = ClientProxyFactory.create({
  transport: Transport.RMQ,
  options: { urls: [URL], queue: TAP, queueOptions: { durable: false } },
});
await client.connect();
client.send('sum', [1, 2, 3]).subscribe({ error: () => {} });
client.send({ cmd: 'sum' }, [1, 2]).subscribe({ error: () => {} });
await client.emit('log', '求和1111').toPromise();
client
  .send('sum', new RmqRecordBuilder([4]).setOptions({ headers: { 'x-trace': 't1' }, priority: 3 }).build())
  .subscribe({ error: () => {} });
await new Promise((r) => setTimeout(r, 500));
console.log('## ClientRMQ publishes');
for (;;) {
  const m = await ch.get(TAP, { noAck: true });
  if (!m) break;
  console.log(JSON.stringify(show(m)));
}
await client.close();

// 2. What ServerRMQ replies, to a reply queue of ours.
const { queue: replies } = await ch.assertQueue('', { exclusive: true });
const requests = [
  ['r1', { pattern: 'sum', data: [1, 2, 3], id: 'r1' }],
  ['r2', { pattern: 'fail', data: null, id: 'r2' }],
  ['r3', { pattern: 'boom', data: null, id: 'r3' }],
  ['r4', { pattern: 'nope', data: null, id: 'r4' }],
  ['r5', { pattern: 'count', data: 2, id: 'r5' }],
  ['r6', { pattern: 'ticks', data: 2, id: 'r6' }],
  ['r7', { pattern: 'fail_obj', data: null, id: 'r7' }],
];
for (const [corr, packet] of requests) {
  ch.sendToQueue(SERVICE, Buffer.from(JSON.stringify(packet)), { replyTo: replies, correlationId: corr });
}
await new Promise((r) => setTimeout(r, 800));
console.log('## ServerRMQ replies');
for (;;) {
  const m = await ch.get(replies, { noAck: true });
  if (!m) break;
  console.log(JSON.stringify(show(m)));
}
await ch.deleteQueue(TAP);
await conn.close();
