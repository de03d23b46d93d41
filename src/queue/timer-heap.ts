// The scheduler's ordered set of next-attempt times: a binary min-heap of (due, id) with lazy
// deletion. Rescheduling an id pushes a new pair and the stale one is skipped when popped, so
// every operation is O(log n) and the heap holds only ids and times, never messages.

interface Item {
  due: number;
  id: string;
}

export class TimerHeap {
  private readonly items: Item[] = [];
  private readonly current = new Map<string, number>();

  get size(): number {
    return this.current.size;
  }

  has(id: string): boolean {
    return this.current.has(id);
  }

  ids(): IterableIterator<string> {
    return this.current.keys();
  }

  schedule(id: string, due: number): void {
    this.current.set(id, due);
    this.items.push({ due, id });
    this.up(this.items.length - 1);
  }

  delete(id: string): void {
    this.current.delete(id);
  }

  /** The earliest due time, skipping stale entries. */
  peekDue(): number | undefined {
    this.dropStale();
    return this.items[0]?.due;
  }

  /** Removes and returns the earliest id if it is due by `now`. */
  popDue(now: number): string | undefined {
    this.dropStale();
    const top = this.items[0];
    if (!top || top.due > now) return undefined;
    this.removeTop();
    this.current.delete(top.id);
    return top.id;
  }

  private dropStale(): void {
    for (let top = this.items[0]; top && this.current.get(top.id) !== top.due; top = this.items[0]) {
      this.removeTop();
    }
  }

  private removeTop(): void {
    const last = this.items.pop()!;
    if (this.items.length) {
      this.items[0] = last;
      this.down(0);
    }
  }

  private up(index: number): void {
    const items = this.items;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (items[parent]!.due <= items[index]!.due) break;
      [items[parent], items[index]] = [items[index]!, items[parent]!];
      index = parent;
    }
  }

  private down(index: number): void {
    const items = this.items;
    for (;;) {
      const left = index * 2 + 1;
      const right = left + 1;
      let smallest = index;
      if (left < items.length && items[left]!.due < items[smallest]!.due) smallest = left;
      if (right < items.length && items[right]!.due < items[smallest]!.due) smallest = right;
      if (smallest === index) return;
      [items[smallest], items[index]] = [items[index]!, items[smallest]!];
      index = smallest;
    }
  }
}
