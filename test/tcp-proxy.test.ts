import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy, type Upstream } from './support/tcp-proxy.js';

/** The proxy the failover and partition tests stand on: its four moves, against two echo servers. */
interface EchoServer extends Upstream {
  server: Server;
  heard: string[];
}

/** Answers every chunk with `name:` and the chunk, so a reply tells which server it came from; keeps what it got in `heard`. */
async function echoServer(name: string): Promise<EchoServer> {
  const heard: string[] = [];
  const server = createServer((socket) =>
    socket
      .on('data', (chunk) => {
        heard.push(chunk.toString());
        socket.write(`${name}:${chunk.toString()}`);
      })
      .on('error', () => undefined),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  return { server, heard, host: '127.0.0.1', port: typeof address === 'object' && address ? address.port : 0 };
}

interface Client {
  socket: Socket;
  received: () => string;
  closed: Promise<void>;
}

async function open(port: number): Promise<Client> {
  const socket = connect(port, '127.0.0.1');
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString()));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => socket.once('connect', () => resolve()).once('error', reject));
  return { socket, received: () => received, closed };
}

async function waitUntil(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const quietFor = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let first: EchoServer;
let second: EchoServer;
let proxy: TcpProxy;
const clients: Client[] = [];

async function client(): Promise<Client> {
  const opened = await open(proxy.port);
  clients.push(opened);
  return opened;
}

beforeAll(async () => {
  first = await echoServer('first');
  second = await echoServer('second');
});

afterEach(async () => {
  clients.splice(0).forEach((opened) => opened.socket.destroy());
  await proxy?.close();
});

afterAll(async () => {
  first.server.close();
  second.server.close();
});

describe('the test TCP proxy', () => {
  it('forwards both ways', async () => {
    proxy = await startTcpProxy(first);
    const a = await client();
    a.socket.write('hello');
    await waitUntil(() => a.received() === 'first:hello');
    expect(proxy.connections).toBe(1);
  });

  it('stalls without closing: nothing comes back, the socket stays open, and forwarding resumes where it stopped', async () => {
    proxy = await startTcpProxy(first);
    const a = await client();
    a.socket.write('one');
    await waitUntil(() => a.received() === 'first:one');
    proxy.stall();
    a.socket.write('two');
    await quietFor(300);
    expect(a.received()).toBe('first:one');
    expect(a.socket.destroyed).toBe(false);

    // A connection opened during the stall is accepted but reaches no server.
    const b = await client();
    b.socket.write('late');
    await quietFor(200);
    expect(b.received()).toBe('');

    proxy.forward();
    await waitUntil(() => a.received() === 'first:onefirst:two' && b.received() === 'first:late');
  });

  it("stall('open') stalls the connections open now and lets new ones through", async () => {
    proxy = await startTcpProxy(first);
    const old = await client();
    proxy.stall('open');
    old.socket.write('lost');
    const fresh = await client();
    fresh.socket.write('new');
    await waitUntil(() => fresh.received() === 'first:new');
    await quietFor(200);
    expect(old.received()).toBe('');
    proxy.forward();
    await waitUntil(() => old.received() === 'first:lost');
  });

  it('cuts: every open connection closes, and new ones still get through', async () => {
    proxy = await startTcpProxy(first);
    const a = await client();
    const b = await client();
    await waitUntil(() => proxy.connections === 2);
    proxy.cut();
    await Promise.all([a.closed, b.closed]);
    expect(proxy.connections).toBe(0);
    const c = await client();
    c.socket.write('again');
    await waitUntil(() => c.received() === 'first:again');
  });

  it('redirects new connections to another server; open ones keep theirs', async () => {
    proxy = await startTcpProxy(first);
    const before = await client();
    before.socket.write('x');
    await waitUntil(() => before.received() === 'first:x');
    proxy.redirect(second);
    const after = await client();
    after.socket.write('y');
    before.socket.write('z');
    await waitUntil(() => after.received() === 'second:y' && before.received() === 'first:xfirst:z');
    expect(proxy.upstream.port).toBe(second.port);
  });

  it('a connection held by a stall goes to the server named when forwarding resumes', async () => {
    proxy = await startTcpProxy(first);
    proxy.stall();
    const held = await client();
    held.socket.write('hi');
    proxy.redirect(second);
    proxy.forward();
    await waitUntil(() => held.received() === 'second:hi');
  });

  it('loses replies: the server still gets what an open connection sends, nothing comes back; a new connection gets its replies', async () => {
    proxy = await startTcpProxy(first);
    const a = await client();
    a.socket.write('before');
    await waitUntil(() => a.received() === 'first:before');
    proxy.loseReplies();
    a.socket.write('unanswered');
    await waitUntil(() => first.heard.includes('unanswered'));
    await quietFor(200);
    expect(a.received()).toBe('first:before');
    expect(a.socket.destroyed).toBe(false);

    const b = await client();
    b.socket.write('fresh');
    await waitUntil(() => b.received() === 'first:fresh');
  });

  it('rewrites a database URL to go through it', async () => {
    proxy = await startTcpProxy(first);
    expect(proxy.urlThrough('mysql://root:pw@db.example:3306/app?ssl=false')).toBe(`mysql://root:pw@127.0.0.1:${proxy.port}/app?ssl=false`);
  });
});
