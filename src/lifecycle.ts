// The relay's parts started in one fixed order and stopped in the reverse one (relay.ts lists
// them). A part that fails to start stops those already started, so a relay that cannot start
// leaves nothing behind (its spool lock, its Redis connection, an open port).
export interface Part {
  /** For the error and log lines. */
  name: string;
  start(): Promise<unknown> | void;
  stop(): Promise<unknown> | void;
}

export class Lifecycle {
  private readonly started: Part[] = [];

  constructor(
    private readonly parts: readonly Part[],
    /** Errors while stopping: reported, and the next part still stops. */
    private readonly onStopError: (part: Part, err: Error) => void,
  ) {}

  async start(): Promise<void> {
    for (const part of this.parts) {
      try {
        await part.start();
      } catch (err) {
        await this.stop();
        throw err;
      }
      this.started.push(part);
    }
  }

  async stop(): Promise<void> {
    while (this.started.length) {
      const part = this.started.pop()!;
      try {
        await part.stop();
      } catch (err) {
        this.onStopError(part, err as Error);
      }
    }
  }
}
