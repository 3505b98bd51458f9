import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from './support/queue.js';

/** Every .ts file under these folders (relative to the repo), with the repo files it imports. */
function importGraph(folders: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of folders.flatMap((folder) => tsFilesUnder(path.join(ROOT, folder)))) {
    // Type-only imports count: a circle of types still ties two modules' concepts together.
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const targets = importedFiles
      .map((imported) => imported.fileName)
      .filter((specifier) => specifier.startsWith('.'))
      .map((specifier) => path.relative(ROOT, path.resolve(path.dirname(file), specifier.replace(/\.js$/, '.ts'))));
    graph.set(path.relative(ROOT, file), targets);
  }
  return graph;
}

function tsFilesUnder(folder: string): string[] {
  return readdirSync(folder, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => path.join(entry.parentPath, entry.name));
}

/** Strongly connected components with more than one module, or a module importing itself (Tarjan). */
export function circles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, counter);
    low.set(node, counter++);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1 || graph.get(node)!.includes(node)) found.push(component.sort());
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

const graph = importGraph(['src', 'migrations']);

/** Only the CLI registers the add-on's verbs; everything else (the core, mailq/testing) must work without it. */
const MAY_IMPORT_MAILBOX = ['src/mailbox/', 'src/cli/'];

describe('the import graph of src/ and migrations/', () => {
  it('is read: the files and their imports are found', () => {
    expect(graph.get('src/mailq.ts')).toContain('src/worker/worker.ts');
    expect(graph.size).toBeGreaterThan(50);
  });

  it('has no circles', () => {
    expect(circles(graph)).toEqual([]);
  });

  it('the core never imports the mailbox add-on', () => {
    const offenders = [...graph]
      .filter(([file]) => !MAY_IMPORT_MAILBOX.some((folder) => file.startsWith(folder)))
      .flatMap(([file, targets]) => targets.filter((target) => target.startsWith('src/mailbox/')).map((target) => `${file} → ${target}`));
    expect(offenders).toEqual([]);
  });

  it('the check itself finds a circle and an import of the add-on', () => {
    const planted = new Map([
      ['src/a.ts', ['src/b.ts']],
      ['src/b.ts', ['src/c.ts']],
      ['src/c.ts', ['src/a.ts', 'src/mailbox/sync.ts']],
      ['src/mailbox/sync.ts', []],
    ]);
    expect(circles(planted)).toEqual([['src/a.ts', 'src/b.ts', 'src/c.ts']]);
  });
});
