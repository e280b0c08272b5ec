// The seed's "user" microservice (NestFactory.createMicroservice + Transport.TCP),
// written as plain ESM JavaScript: decorators are applied by calling them as functions.
//
//   HOST (default 127.0.0.1)  PORT (default 8888; 0 = pick a free port)
//   TLS_CERT, TLS_KEY (PEM files): serve TLS via Nest's tlsOptions
//
// stdout: `READY <port>` once listening; `EVENT log <json>` for every `log` event.
import 'reflect-metadata';
import { readFileSync } from 'node:fs';
import { Controller, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  EventPattern,
  MessagePattern,
  RpcException,
  Transport,
} from '@nestjs/microservices';
import { EMPTY, concat, from, ignoreElements, interval, take, throwError, timer } from 'rxjs';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 8888);

// Apply a method decorator the way TypeScript's legacy decorators would.
function decorate(cls, method, ...decorators) {
  for (const decorator of decorators) {
    const descriptor = Object.getOwnPropertyDescriptor(cls.prototype, method);
    const result = decorator(cls.prototype, method, descriptor);
    if (result) Object.defineProperty(cls.prototype, method, result);
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
}

decorate(AppController, 'sum', MessagePattern('sum'));
decorate(AppController, 'log', EventPattern('log'));
decorate(AppController, 'echo', MessagePattern('echo'));
decorate(AppController, 'sumCmd', MessagePattern({ cmd: 'sum' }));
decorate(AppController, 'fail', MessagePattern('fail'));
decorate(AppController, 'failObj', MessagePattern('fail_obj'));
decorate(AppController, 'boom', MessagePattern('boom'));
decorate(AppController, 'slow', MessagePattern('slow'));
decorate(AppController, 'count', MessagePattern('count'));
decorate(AppController, 'ticks', MessagePattern('ticks'));
decorate(AppController, 'empty', MessagePattern('empty'));
decorate(AppController, 'failsAfter', MessagePattern('fails_after'));
Controller()(AppController);

class AppModule {}
Module({ controllers: [AppController] })(AppModule);

async function bootstrap() {
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
