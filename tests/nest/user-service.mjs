// The seed's "user" microservice (NestFactory.createMicroservice + Transport.TCP),
// written as plain ESM JavaScript: decorators are applied by calling them as functions.
//
//   HOST (default 127.0.0.1)  PORT (default 8888; 0 = pick a free port)
//   TLS_CERT, TLS_KEY (PEM files): serve TLS via Nest's tlsOptions
//   TRANSPORT=nats: serve the same controller over Transport.NATS instead of TCP
//     (HOST/PORT/TLS_* are then ignored):
//     NATS_URL (default nats://127.0.0.1:4222)  NATS_QUEUE (optional queue group)
//   TRANSPORT=rmq: serve it over Transport.RMQ (ServerRMQ, amqplib +
//     amqp-connection-manager): RMQ_URL (default amqp://127.0.0.1:5672),
//     RMQ_QUEUE (default user_service), RMQ_NOACK=false (manual acknowledgement: Nest
//     then nacks what it cannot route; these handlers never ack), RMQ_PREFETCH (prefetchCount)
//   INSTANCE (optional): what the `whoami` handler returns (default 'nest')
//
// stdout: `READY <port>` once listening over TCP, `READY rmq` once consuming over RMQ, or
// `READY nats` once subscribed over NATS (after a flush: the NATS server has registered
// every subscription);
// `EVENT log <json>` for every `log` event.
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import {
  BadRequestException,
  Controller,
  Module,
  ParseIntPipe,
  UseGuards,
  UsePipes,
  ValidationPipe,
} from '@nestjs/common';
import { Type } from 'class-transformer';
import {
  IsArray,
  IsEmail,
  IsInt,
  IsString,
  Length,
  Max,
  Min,
  MinLength,
  ValidateNested,
} from 'class-validator';
import { NestFactory } from '@nestjs/core';
import {
  Ctx,
  EventPattern,
  MessagePattern,
  Payload,
  RpcException,
  Transport,
} from '@nestjs/microservices';
import { EMPTY, concat, from, ignoreElements, interval, take, throwError, timer } from 'rxjs';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 8888);
const TRANSPORT = (process.env.TRANSPORT || 'tcp').toLowerCase();
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222';
const INSTANCE = process.env.INSTANCE || 'nest';
const RMQ_URL = process.env.RMQ_URL || 'amqp://127.0.0.1:5672';
const RMQ_QUEUE = process.env.RMQ_QUEUE || 'user_service';
const RMQ_NOACK = process.env.RMQ_NOACK !== 'false';
if (!['tcp', 'nats', 'rmq'].includes(TRANSPORT)) {
  throw new Error(`TRANSPORT must be tcp, nats or rmq, not ${JSON.stringify(TRANSPORT)}`);
}

// Apply a method decorator the way TypeScript's legacy decorators would.
function decorate(cls, method, ...decorators) {
  for (const decorator of decorators) {
    const descriptor = Object.getOwnPropertyDescriptor(cls.prototype, method);
    const result = decorator(cls.prototype, method, descriptor);
    if (result) Object.defineProperty(cls.prototype, method, result);
  }
}

// Apply property decorators (class-validator, class-transformer) to a DTO class.
function decorateProps(cls, props) {
  for (const [prop, decorators] of Object.entries(props)) {
    for (const decorator of decorators) decorator(cls.prototype, prop);
  }
}

// --- DTOs validated by ValidationPipe (create_user) -------------------------
class AddressDto {}
decorateProps(AddressDto, {
  city: [IsString(), MinLength(2)],
  zip: [IsString(), Length(5, 5)],
});

class ItemDto {}
decorateProps(ItemDto, {
  sku: [IsString(), MinLength(1)],
  qty: [IsInt(), Min(1), Max(99)],
});

class CreateUserDto {}
decorateProps(CreateUserDto, {
  name: [IsString(), Length(2, 20)],
  email: [IsEmail()],
  age: [IsInt(), Min(0), Max(150)],
  address: [ValidateNested(), Type(() => AddressDto)],
  items: [IsArray(), ValidateNested({ each: true }), Type(() => ItemDto)],
});

// ValidationPipe as the Nest docs' fix for validation errors over RPC (nestjs/nest #8999):
// the pipe's own BadRequestException body, thrown as an RpcException so the caller gets it
// (without the factory, any HttpException reaches an RPC caller as "Internal server error").
const rpcValidationPipe = new ValidationPipe({
  exceptionFactory: (errors) =>
    new RpcException(
      new BadRequestException(rpcValidationPipe.flattenValidationErrors(errors)).getResponse(),
    ),
});

// ParseIntPipe with the same kind of factory, and without (Nest's default over RPC).
const rpcParseIntPipe = new ParseIntPipe({
  exceptionFactory: (message) => new RpcException(new BadRequestException(message).getResponse()),
});

// A guard as a Nest user writes one: reads the RPC payload, returns a boolean.
class TokenGuard {
  canActivate(context) {
    const data = context.switchToRpc().getData();
    return data != null && data.token === 's3cret';
  }
}

class AppController {
  // --- the seed's two handlers ---------------------------------------------
  sum(numArr) {
    return numArr.reduce((total, item) => total + item, 0);
  }

  log(str) {
    console.log(str);
    console.log(`EVENT log ${JSON.stringify(str)}`);
  }

  // --- the load benchmark's events without output (nestling's example has the same) --
  tally() {
    tallied += 1;
  }

  tallied() {
    return tallied;
  }

  // --- extra handlers for the interop tests --------------------------------
  echo(data) {
    return data;
  }

  sumCmd(numArr) {
    return numArr.reduce((total, item) => total + item, 0);
  }

  fail() {
    throw new RpcException('bad thing');
  }

  failObj() {
    throw new RpcException({ code: 42, message: 'm' });
  }

  boom() {
    throw new Error('boom');
  }

  async slow(ms) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return ms;
  }

  // Guarded by TokenGuard (@UseGuards): only payloads with token "s3cret" get through.
  secret(data) {
    return `welcome ${data.user}`;
  }

  // --- validation and param decorators (tests/validation.rs) ---------------
  // @Payload() dto: CreateUserDto, @UsePipes(ValidationPipe with the RpcException factory).
  createUser(dto) {
    return { created: dto.name, city: dto.address.city, items: dto.items.length };
  }

  // @Payload('id', ParseIntPipe with the RpcException factory) id, @Payload('name') name.
  getUser(id, name) {
    return { id, name: name ?? null, idType: typeof id };
  }

  // @Payload('id', ParseIntPipe) id: Nest's default, no factory.
  getUserPlain(id) {
    return id;
  }

  // --- streamed replies (Observables) ---------------------------------------
  // 1..n, all synchronous: completion merges into the last item's packet.
  count(n) {
    return from(Array.from({ length: n }, (_, i) => i + 1));
  }

  // 1..n spaced in time, completing later than the last item: a separate
  // {"isDisposed":true} packet ends the stream.
  ticks(n) {
    return concat(
      interval(5).pipe(take(n)),
      timer(20).pipe(ignoreElements()),
    );
  }

  empty() {
    return EMPTY;
  }

  // 1..n, then an RpcException.
  failsAfter(n) {
    return concat(
      from(Array.from({ length: n }, (_, i) => i + 1)),
      throwError(() => new RpcException('stream broke')),
    );
  }

  // --- extra handlers for tests/differential.rs -----------------------------
  // `echo` under another name (mirrored in Rust with a raw-JSON payload).
  echoRaw(data) {
    return data;
  }

  // A string's length in UTF-16 units and its FNV-1a hash over those units:
  // checks big payloads without sending them back.
  len(s) {
    if (typeof s !== 'string') throw new RpcException('len expects a string');
    return { length: s.length, fnv: fnv1a(s) };
  }

  // {s, n} -> s repeated n times: a big reply from a small request.
  repeat({ s, n }) {
    return s.repeat(n);
  }

  // Throws RpcException(data), whatever data is.
  raise(data) {
    throw new RpcException(data);
  }

  // Throws a value that is not an Error.
  throwStr() {
    throw 'not an Error';
  }

  async boomAsync() {
    await tick();
    throw new Error('async boom');
  }

  async failAsync() {
    await tick();
    throw new RpcException('async bad');
  }

  giveNull() {
    return null;
  }

  // A reply JSON.stringify cannot write (a BigInt): Nest logs the TypeError and sends
  // nothing at all, so the caller waits forever.
  unserialisable() {
    return { n: 10n };
  }

  giveUndefined() {
    return undefined;
  }

  // Each element of the array `items` as its own stream item.
  streamItems(items) {
    return from(items);
  }

  // 1..n, then a plain Error (-> Internal server error).
  streamBoom(n) {
    return concat(
      from(Array.from({ length: n }, (_, i) => i + 1)),
      throwError(() => new Error('stream boom')),
    );
  }

  // A Promise resolving to an Observable: Nest flattens it.
  async asyncStream(items) {
    await tick();
    return from(items);
  }

  fortyTwo() {
    return 'forty-two';
  }

  calc(data) {
    return { handler: 'calc', data };
  }

  arr() {
    return 'arr';
  }

  cjk() {
    return 'cjk';
  }

  emoji() {
    return 'emoji';
  }

  deep() {
    return 'deep';
  }

  many() {
    return 'many';
  }

  // Events, observable through `recorded`: `record` has two handlers (both run).
  record(data) {
    remember(data.key, data.value);
  }

  recordAlso(data) {
    remember(`${data.key}:also`, data.value);
  }

  recordObj(data) {
    remember(`${data.key}:obj`, data.value);
  }

  // A message handler that records: an event sent to it runs it, result discarded.
  note(data) {
    remember(data.key, data.value);
    return 'noted';
  }

  // A single event handler with a return value (what a request to it receives).
  audit(data) {
    return { audited: data };
  }

  eventBoom() {
    throw new Error('event boom');
  }

  // TcpContext.getPattern(): the pattern in the sender's form (@Payload() data, @Ctx() ctx).
  patternOf(data, ctx) {
    return ctx.getPattern();
  }

  patternOfObj(data, ctx) {
    return ctx.getPattern();
  }

  // Store TcpContext.getPattern() of an event under data.key.
  patternSeen(data, ctx) {
    remember(data.key, ctx.getPattern());
  }

  patternSeenMixed(data, ctx) {
    remember(data.key, ctx.getPattern());
  }

  patternSeenLower(data, ctx) {
    remember(data.key, ctx.getPattern());
  }

  // What RmqContext exposes of the message: its properties and routing (RMQ only).
  rmqMessage(data, ctx) {
    const { properties, fields } = ctx.getMessage();
    return {
      pattern: ctx.getPattern(),
      headers: properties.headers ?? null,
      priority: properties.priority ?? null,
      directReplyTo: String(properties.replyTo).startsWith('amq.rabbitmq.reply-to'),
      hasCorrelationId: typeof properties.correlationId === 'string',
      exchange: fields.exchange,
      redelivered: fields.redelivered,
    };
  }

  // {key, n}: waits (up to 3 s) until `n` values were recorded under `key`, then
  // returns them sorted (JS default sort: UTF-16 code unit order).
  // Which process answered: INSTANCE (default 'nest'). For queue-group spread tests.
  whoami() {
    return INSTANCE;
  }

  async recorded({ key, n }) {
    const deadline = Date.now() + 3000;
    while ((store.get(key)?.length ?? 0) < n && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return [...(store.get(key) ?? [])].sort();
  }
}

let tallied = 0;

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

// FNV-1a (32 bit) over UTF-16 code units, as 8 hex digits.
function fnv1a(s) {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

const store = new Map();
function remember(key, value) {
  if (!store.has(key)) store.set(key, []);
  store.get(key).push(value);
}

decorate(AppController, 'sum', MessagePattern('sum'));
decorate(AppController, 'log', EventPattern('log'));
decorate(AppController, 'tally', EventPattern('tally'));
decorate(AppController, 'tallied', MessagePattern('tallied'));
decorate(AppController, 'echo', MessagePattern('echo'));
decorate(AppController, 'sumCmd', MessagePattern({ cmd: 'sum' }));
decorate(AppController, 'fail', MessagePattern('fail'));
decorate(AppController, 'failObj', MessagePattern('fail_obj'));
decorate(AppController, 'boom', MessagePattern('boom'));
decorate(AppController, 'slow', MessagePattern('slow'));
decorate(AppController, 'secret', MessagePattern('secret'), UseGuards(TokenGuard));
decorate(AppController, 'count', MessagePattern('count'));
decorate(AppController, 'ticks', MessagePattern('ticks'));
decorate(AppController, 'empty', MessagePattern('empty'));
decorate(AppController, 'failsAfter', MessagePattern('fails_after'));
decorate(AppController, 'echoRaw', MessagePattern('echo_raw'));
decorate(AppController, 'len', MessagePattern('len'));
decorate(AppController, 'repeat', MessagePattern('repeat'));
decorate(AppController, 'raise', MessagePattern('raise'));
decorate(AppController, 'throwStr', MessagePattern('throw_str'));
decorate(AppController, 'boomAsync', MessagePattern('boom_async'));
decorate(AppController, 'failAsync', MessagePattern('fail_async'));
decorate(AppController, 'giveNull', MessagePattern('give_null'));
decorate(AppController, 'giveUndefined', MessagePattern('give_undefined'));
decorate(AppController, 'unserialisable', MessagePattern('unserialisable'));
decorate(AppController, 'streamItems', MessagePattern('stream_items'));
decorate(AppController, 'streamBoom', MessagePattern('stream_boom'));
decorate(AppController, 'asyncStream', MessagePattern('async_stream'));
decorate(AppController, 'fortyTwo', MessagePattern(42));
decorate(AppController, 'calc', MessagePattern({ cmd: 'calc', op: 'add', meta: { v: 1, tags: ['x', 'y'] } }));
decorate(AppController, 'arr', MessagePattern(['arr', 1]));
decorate(AppController, 'cjk', MessagePattern('求和'));
// Not over NATS: a subject must not contain whitespace (nats.js throws InvalidSubjectError
// from subscribe(), and Nest's listen() fails).
if (TRANSPORT !== 'nats') decorate(AppController, 'emoji', MessagePattern('😀 #1'));
// Objects nested deeper than 5 levels normalise to [MAX_DEPTH_REACHED].
decorate(AppController, 'deep', MessagePattern({ d: { d: { d: { d: { d: { d: { leaf: 1 } } } } } } }));
// More than 20 keys normalise to [TOO_MANY_KEYS].
decorate(AppController, 'many', MessagePattern({ many: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`k${i}`, i])) }));
decorate(AppController, 'record', EventPattern('record'));
decorate(AppController, 'recordAlso', EventPattern('record'));
decorate(AppController, 'recordObj', EventPattern({ ev: 'record', v: 2 }));
decorate(AppController, 'note', MessagePattern('note'));
decorate(AppController, 'audit', EventPattern('audit'));
decorate(AppController, 'eventBoom', EventPattern('event_boom'));
decorate(AppController, 'recorded', MessagePattern('recorded'));
decorate(AppController, 'whoami', MessagePattern('whoami'));
decorate(AppController, 'rmqMessage', MessagePattern('rmq_message'));
decorate(AppController, 'patternOf', MessagePattern('pattern_of'));
decorate(AppController, 'patternOfObj', MessagePattern({ Cmd: 'pattern_of', a: 1 }));
decorate(AppController, 'patternSeen', EventPattern('pattern_seen'));
// Mixed-case keys: ICU collation (localeCompare) and code-point order sort them differently.
decorate(AppController, 'patternSeenMixed', EventPattern({ Ev: 'pattern_seen', a: 1 }));
decorate(AppController, 'patternSeenLower', EventPattern({ ev: 'pattern_seen', a: 1 }));
for (const method of ['rmqMessage', 'patternOf', 'patternOfObj', 'patternSeen', 'patternSeenMixed', 'patternSeenLower']) {
  Payload()(AppController.prototype, method, 0);
  Ctx()(AppController.prototype, method, 1);
}
decorate(AppController, 'createUser', MessagePattern('create_user'), UsePipes(rpcValidationPipe));
Payload()(AppController.prototype, 'createUser', 0);
// What TypeScript's emitDecoratorMetadata would record: ValidationPipe reads the DTO class here.
Reflect.defineMetadata('design:paramtypes', [CreateUserDto], AppController.prototype, 'createUser');
decorate(AppController, 'getUser', MessagePattern('get_user'));
Payload('id', rpcParseIntPipe)(AppController.prototype, 'getUser', 0);
Payload('name')(AppController.prototype, 'getUser', 1);
decorate(AppController, 'getUserPlain', MessagePattern('get_user_plain'));
Payload('id', ParseIntPipe)(AppController.prototype, 'getUserPlain', 0);
Controller()(AppController);

class AppModule {}
Module({ controllers: [AppController] })(AppModule);

// --- exception filters (tests/filters.rs) -------------------------------------
// @Catch(NotFoundError) class NotFoundFilter implements RpcExceptionFilter, used with
// @UseFilters(new NotFoundFilter()) on find_user, find_user_async and find_users. An error
// no filter catches (id 0) gets Nest's default.
import { Catch, UseFilters } from '@nestjs/common';
import { concat as rxConcat, defer as rxDefer, of as rxOf, throwError as rxThrowError } from 'rxjs';

class NotFoundError extends Error {
  constructor(id) {
    super(`user ${id} not found`);
  }
}

class NotFoundFilter {
  catch(exception) {
    return rxThrowError(() => ({ status: 404, message: exception.message }));
  }
}
Catch(NotFoundError)(NotFoundFilter);

const USERS = new Map([
  [1, 'ada'],
  [2, 'grace'],
]);

function findUserOrThrow(id) {
  if (id === 0) throw new Error('database down');
  const name = USERS.get(id);
  if (name === undefined) throw new NotFoundError(id);
  return { id, name };
}

AppController.prototype.findUser = function (id) {
  return findUserOrThrow(id);
};
AppController.prototype.findUserAsync = async function (id) {
  await tick();
  return findUserOrThrow(id);
};
AppController.prototype.findUsers = function (ids) {
  return rxConcat(...ids.map((id) => rxDefer(() => rxOf(findUserOrThrow(id)))));
};
for (const [method, pattern] of [
  ['findUser', 'find_user'],
  ['findUserAsync', 'find_user_async'],
  ['findUsers', 'find_users'],
]) {
  decorate(AppController, method, MessagePattern(pattern), UseFilters(new NotFoundFilter()));
}

async function bootstrapNats() {
  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.NATS,
    options: {
      servers: [NATS_URL],
      ...(process.env.NATS_QUEUE && { queue: process.env.NATS_QUEUE }),
    },
  });
  app.enableShutdownHooks();
  await app.listen();
  // listen() resolves once the SUBs are queued; flush() (PING/PONG) makes sure the NATS
  // server has processed them, so a request sent right after READY finds a subscriber.
  await app.unwrap().flush();
  console.log('READY nats');
}

async function bootstrapRmq() {
  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.RMQ,
    options: {
      urls: [RMQ_URL],
      queue: RMQ_QUEUE,
      noAck: RMQ_NOACK,
      ...(process.env.RMQ_PREFETCH && { prefetchCount: Number(process.env.RMQ_PREFETCH) }),
    },
  });
  app.enableShutdownHooks();
  await app.listen();
  console.log('READY rmq');
}

async function bootstrap() {
  if (TRANSPORT === 'nats') return bootstrapNats();
  if (TRANSPORT === 'rmq') return bootstrapRmq();
  const app = await NestFactory.createMicroservice(AppModule, {
    transport: Transport.TCP,
    options: {
      host: HOST,
      port: PORT,
      // TLS_CERT / TLS_KEY (PEM file paths) switch the server to TLS (Nest's tlsOptions).
      ...(process.env.TLS_CERT && {
        tlsOptions: {
          cert: readFileSync(process.env.TLS_CERT),
          key: readFileSync(process.env.TLS_KEY),
        },
      }),
    },
  });
  app.enableShutdownHooks();
  await app.listen();
  // Report the port actually bound, so PORT=0 (ephemeral port) works too.
  console.log(`READY ${app.unwrap().address().port}`);
}

bootstrap().catch((err) => {
  console.error(err);
  process.exit(1);
});
