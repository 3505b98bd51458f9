import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { ROOT } from './support/queue.js';

/** What an app that queues its own jobs imports: 'mailq' and 'mailq/testing' (the mailbox add-on is documented in its modules). */
const ENTRY_POINTS = ['src/index.ts', 'src/testing/index.ts'];

/** The values (not types) each entry point exports whose declaration has no @example in its doc comment. */
function valuesWithoutExample(): Record<string, string[]> {
  const program = ts.createProgram(ENTRY_POINTS.map((file) => path.join(ROOT, file)), { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, noEmit: true });
  const checker = program.getTypeChecker();
  const missing: Record<string, string[]> = {};
  for (const entry of ENTRY_POINTS) {
    const source = program.getSourceFile(path.join(ROOT, entry))!;
    const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(source)!);
    missing[entry] = exports
      .filter((symbol) => !isTypeOnlyExport(symbol))
      .map((symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol))
      .filter((symbol) => symbol.flags & ts.SymbolFlags.Value)
      .filter((symbol) => !symbol.getJsDocTags(checker).some((tag) => tag.name === 'example'))
      .map((symbol) => symbol.getName());
  }
  return missing;
}

function isTypeOnlyExport(symbol: ts.Symbol): boolean {
  const declaration = symbol.declarations?.[0];
  return declaration !== undefined && ts.isExportSpecifier(declaration) && (declaration.isTypeOnly || declaration.parent.parent.isTypeOnly);
}

describe('the public API', () => {
  it('documents every exported function, class and constant with an @example', () => {
    expect(valuesWithoutExample()).toEqual(Object.fromEntries(ENTRY_POINTS.map((entry) => [entry, []])));
  });
});
