import { createServer, connect, type Server, type Socket } from 'node:net';

export interface Upstream {
  host: string;
  port: number;
}

/**
 * A TCP proxy on loopback that plays the network between a worker host and its database:
 * - forward: bytes flow both ways (the normal state);
 * - stall: nothing flows and nothing closes, like a partition or a hung switch. Connections
 *   opened meanwhile are accepted but reach nobody until forwarding resumes. `stall('open')`
 *   stalls only the connections open now and lets new ones through: a path that went dark
 *   while the name already points at a live server;
 * - cut: every connection is closed at once, like a server or a firewall resetting them;
 * - redirect: new connections go to another server (a failover behind the same name);
 *   open ones stay with the server they reached;
 * - loseReplies: the connections open now still carry what the client sends, but what the server
 *   sends back is thrown away, like a reply lost on the way: the statement ran, its answer never comes.
 */
export interface TcpProxy {
  readonly port: number;
  readonly upstream: Upstream;
  /** Connections open through the proxy now. */
  readonly connections: number;
  forward(): void;
  stall(scope?: 'all' | 'open'): void;
  /** Closes every open connection; new ones are still accepted (and forwarded unless stalled). */
  cut(): void;
  redirect(upstream: Upstream): void;
  /** From now on, the server's bytes on the connections open now are dropped; new connections are not affected. */
  loseReplies(): void;
  /** `url` with its host and port replaced by the proxy's. */
  urlThrough(url: string): string;
  close(): Promise<void>;
}

/** One client connection and its upstream half. */
class Link {
  private upstream: Socket | undefined;
  private held = true;
  private repliesLost = false;

  constructor(
    private readonly client: Socket,
    private readonly onClosed: (link: Link) => void,
  ) {
    client.pause();
    client.on('error', () => this.destroy());
    client.on('close', () => this.destroy());
  }

  /** Connects to `target` the first time (later calls keep the server it reached) and lets bytes flow. */
  open(target: Upstream): void {
    if (this.client.destroyed) return;
    if (!this.upstream) {
      this.upstream = connect(target.port, target.host);
      this.upstream.on('error', () => this.destroy());
      this.upstream.on('close', () => this.destroy());
      this.relay(this.client, this.upstream);
      this.relay(this.upstream, this.client, () => this.repliesLost);
    }
    this.held = false;
    this.client.resume();
    this.upstream.resume();
  }

  /** Stops reading both ways; whatever the peers send waits in the kernel's buffers. */
  hold(): void {
    this.held = true;
    this.client.pause();
    this.upstream?.pause();
  }

  loseReplies(): void {
    this.repliesLost = true;
  }

  destroy(): void {
    if (!this.client.destroyed) this.client.destroy();
    if (this.upstream && !this.upstream.destroyed) this.upstream.destroy();
    this.onClosed(this);
  }

  /** Copies bytes with backpressure (or drops them while `dropping()`); a drain never resumes a held link. */
  private relay(from: Socket, to: Socket, dropping: () => boolean = () => false): void {
    from.on('data', (chunk: Buffer) => {
      if (dropping() || to.write(chunk)) return;
      from.pause();
      to.once('drain', () => {
        if (!this.held) from.resume();
      });
    });
    from.on('end', () => to.end());
  }
}

export async function startTcpProxy(initial: Upstream): Promise<TcpProxy> {
  let upstream = initial;
  let stalled = false;
  const links = new Set<Link>();
  const server: Server = createServer((client) => {
    const link = new Link(client, (closed) => links.delete(closed));
    links.add(link);
    if (!stalled) link.open(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    port,
    get upstream() {
      return upstream;
    },
    get connections() {
      return links.size;
    },
    forward() {
      stalled = false;
      for (const link of links) link.open(upstream);
    },
    stall(scope = 'all') {
      stalled = scope === 'all';
      for (const link of links) link.hold();
    },
    cut() {
      for (const link of [...links]) link.destroy();
    },
    redirect(next) {
      upstream = next;
    },
    loseReplies() {
      for (const link of links) link.loseReplies();
    },
    urlThrough(url) {
      const parsed = new URL(url);
      parsed.hostname = '127.0.0.1';
      parsed.port = String(port);
      return parsed.toString();
    },
    close() {
      for (const link of [...links]) link.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
