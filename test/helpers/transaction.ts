// A printer's DATA transaction, as the listener hands it to receiveMessage (src/smtp/receive.ts):
// the fixture of the tests that drive the reception pipeline directly.
import type { Source } from '../../src/policy/sources.js';
import type { Transaction } from '../../src/smtp/receive.js';
import { newQueueId } from '../../src/spool/entry.js';

export const printerSource: Source = {
  name: 'printers',
  kind: 'allowlist',
  cidr: '10.0.0.0/8',
  policy: {} as Source['policy'],
};

/** scanner@corp.example from 10.1.2.3 to a@example.com, 1 MB limit; a new queue id each call. */
export function printerTransaction(overrides: Partial<Transaction> = {}): Transaction {
  return {
    id: newQueueId(),
    source: printerSource,
    originalFrom: 'scanner@corp.example',
    from: 'scanner@corp.example',
    recipients: ['a@example.com'],
    client: { address: '10.1.2.3', helo: 'printer', tls: false },
    hostname: 'relay.test',
    sizeLimit: 1024 * 1024,
    ...overrides,
  };
}
