// A Nest-side caller written in TypeScript against the contracts generated from the Rust
// user service (user-service.ts): every call below is type-checked against the Rust types.
//
//   node gateway.js <host> <port>   (after `tsc`; see tests/contracts.rs)
//
// stdout: one JSON line with what each call returned.
import { ClientProxyFactory, Transport } from '@nestjs/microservices';
import { lastValueFrom, toArray } from 'rxjs';
import { UserControllerClient, UserControllerPatterns } from './user-service.js';

// tests/nest has no @types/node: the little of Node this script uses.
declare const process: { argv: string[] };
declare const console: { log(line: string): void };

const host = process.argv[2] ?? '127.0.0.1';
const port = Number(process.argv[3] ?? 8888);
const users = new UserControllerClient(
  ClientProxyFactory.create({ transport: Transport.TCP, options: { host, port } }),
);

// emit: an event, no reply (the Observable completes once the frame is written).
await lastValueFrom(users.log('求和1111'), { defaultValue: undefined });
// send: one reply.
const sum: number = await lastValueFrom(users.sum([1, 2, 3]));
// a streamed reply: one item per packet.
const counted: number[] = await lastValueFrom(users.count(3).pipe(toArray()));
const who: string = await lastValueFrom(users.whoami());

console.log(JSON.stringify({ sum, counted, who, sumPattern: UserControllerPatterns.sum }));
users.client.close();
