// The seed's "main" HTTP gateway: GET /sum?num=1,2,3 emits `log` and returns send('sum').
//
//   PORT (default 3000; 0 = pick a free port), listens on HOST (default 127.0.0.1)
//   USER_SERVICE_HOST (default 127.0.0.1)  USER_SERVICE_PORT (default 8888)
//   TRANSPORT=nats: reach USER_SERVICE over Transport.NATS instead
//     (NATS_URL, default nats://127.0.0.1:4222; USER_SERVICE_HOST/PORT are then ignored)
//
// stdout: `READY <port>` once the HTTP server is listening.
import 'reflect-metadata';
import { Controller, Get, Inject, Module, Query } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ClientsModule, Transport } from '@nestjs/microservices';

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 3000);
const USER_SERVICE_HOST = process.env.USER_SERVICE_HOST || '127.0.0.1';
const USER_SERVICE_PORT = Number(process.env.USER_SERVICE_PORT || 8888);
const TRANSPORT = (process.env.TRANSPORT || 'tcp').toLowerCase();
const NATS_URL = process.env.NATS_URL || 'nats://127.0.0.1:4222';

class AppController {
  calc(str) {
    const numArr = str.split(',').map(item => parseInt(item));
    // emit: no reply expected, one TCP packet; reaches @EventPattern('log')
    this.userClient.emit('log', '求和1111');
    // send: request/response; reaches @MessagePattern('sum')
    return this.userClient.send('sum', numArr);
  }
}

// @Inject('USER_SERVICE') private userClient: ClientProxy;
Inject('USER_SERVICE')(AppController.prototype, 'userClient');
// calc(@Query('num') str)
Query('num')(AppController.prototype, 'calc', 0);
// @Get('sum')
Get('sum')(
  AppController.prototype,
  'calc',
  Object.getOwnPropertyDescriptor(AppController.prototype, 'calc'),
);
Controller()(AppController);

class AppModule {}
Module({
  imports: [
    ClientsModule.register([
      TRANSPORT === 'nats'
        ? {
            name: 'USER_SERVICE',
            transport: Transport.NATS,
            options: { servers: [NATS_URL] },
          }
        : {
            name: 'USER_SERVICE',
            transport: Transport.TCP,
            options: { host: USER_SERVICE_HOST, port: USER_SERVICE_PORT },
          },
    ]),
  ],
  controllers: [AppController],
})(AppModule);

async function bootstrap() {
  const app = await NestFactory.create(AppModule);
  app.enableShutdownHooks();
  await app.listen(PORT, HOST);
  console.log(`READY ${app.getHttpServer().address().port}`);
}

bootstrap().catch((err) => {
  console.error(err);
  process.exit(1);
});
