// TimerHeap: the scheduler's ordered set of (due, id), with rescheduling and deletion.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TimerHeap } from '../../src/queue/timer-heap.js';

function drain(heap: TimerHeap, now = Infinity): string[] {
  const out: string[] = [];
  for (let id = heap.popDue(now); id !== undefined; id = heap.popDue(now)) out.push(id);
  return out;
}

describe('TimerHeap', () => {
  test('pops ids in due order, only those due by now', () => {
    const heap = new TimerHeap();
    heap.schedule('c', 30);
    heap.schedule('a', 10);
    heap.schedule('b', 20);
    assert.equal(heap.size, 3);
    assert.equal(heap.peekDue(), 10);
    assert.equal(heap.popDue(5), undefined, 'nothing is due yet');
    assert.deepEqual(drain(heap, 20), ['a', 'b']);
    assert.equal(heap.peekDue(), 30);
    assert.deepEqual(drain(heap), ['c']);
    assert.equal(heap.size, 0);
    assert.equal(heap.peekDue(), undefined);
  });

  test('rescheduling an id keeps only its latest time, earlier or later', () => {
    const heap = new TimerHeap();
    heap.schedule('x', 100);
    heap.schedule('y', 50);
    heap.schedule('x', 10); // earlier
    heap.schedule('y', 200); // later
    assert.equal(heap.size, 2);
    assert.equal(heap.peekDue(), 10);
    assert.deepEqual(drain(heap, 150), ['x'], 'x once, y not yet (its old time is stale)');
    assert.equal(heap.peekDue(), 200);
    assert.deepEqual(drain(heap), ['y']);
  });

  test('the same id scheduled twice at the same time pops once', () => {
    const heap = new TimerHeap();
    heap.schedule('x', 10);
    heap.schedule('x', 10);
    assert.deepEqual(drain(heap), ['x']);
  });

  test('delete forgets an id; has and ids reflect the live set', () => {
    const heap = new TimerHeap();
    heap.schedule('a', 1);
    heap.schedule('b', 2);
    heap.delete('a');
    assert.equal(heap.has('a'), false);
    assert.equal(heap.has('b'), true);
    assert.deepEqual([...heap.ids()], ['b']);
    assert.equal(heap.peekDue(), 2);
    assert.deepEqual(drain(heap), ['b']);
  });

  test('agrees with a sort for many random schedules and reschedules', () => {
    const heap = new TimerHeap();
    const expected = new Map<string, number>();
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 5000; i++) {
      const id = `m${random(500)}`;
      if (random(10) === 0) {
        heap.delete(id);
        expected.delete(id);
      } else {
        const due = random(100_000);
        heap.schedule(id, due);
        expected.set(id, due);
      }
    }
    assert.equal(heap.size, expected.size);
    const popped: [string, number][] = [];
    for (let due = heap.peekDue(); due !== undefined; due = heap.peekDue()) {
      popped.push([heap.popDue(due)!, due]);
    }
    assert.equal(popped.length, expected.size);
    for (let i = 1; i < popped.length; i++) assert.ok(popped[i - 1]![1] <= popped[i]![1], 'in order');
    for (const [id, due] of popped) assert.equal(expected.get(id), due, `${id} at its latest time`);
  });
});
