import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Hono } from 'hono';
import { MailqError } from '../errors.js';

export interface Listening {
  /** `http://host:port`, with the port the system gave when 0 was asked. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves a Hono app on host:port; a port already taken is one clear error, not an unhandled event. */
export function listen(app: Hono, host: string, port: number): Promise<Listening> {
  const server = createAdaptorServer({ fetch: app.fetch });
  return new Promise((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      const reason = error.code === 'EADDRINUSE' ? 'the port is in use' : error.code === 'EADDRNOTAVAIL' ? 'no such address on this host' : error.message;
      reject(new MailqError(`cannot listen on ${host}:${port}: ${reason}`, { exitCode: 2 }));
    });
    server.listen(port, host, () => {
      const address = server.address() as AddressInfo;
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      resolve({
        url: `http://${shown}:${address.port}`,
        port: address.port,
        close: () =>
          new Promise<void>((done) => {
            // Open keep-alive connections (a browser, a scraper) must not hold the process.
            (server as { closeAllConnections?: () => void }).closeAllConnections?.();
            server.close(() => done());
          }),
      });
    });
  });
}
