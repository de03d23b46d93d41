// The control socket's protocol: one JSON object per line each way. A request names a command
// and its arguments; the reply carries the same id and either a result or an error.

export interface ControlRequest {
  id: number;
  command: string;
  args?: Record<string, unknown>;
}

export type ControlResponse =
  | { id: number; ok: true; result: unknown }
  | {
      id: number;
      ok: false;
      error: string;
      /** 'refused': the relay declined the action (exit 1); 'unknown': no such command. */
      code?: 'refused' | 'unknown' | 'bad_request' | 'internal';
    };

/** A handler's way of saying no: the message goes back to the CLI as is. */
export class ControlRefusal extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ControlRefusal';
  }
}

/** Requests larger than this are refused (nothing the CLI sends comes close). */
export const MAX_REQUEST_BYTES = 1024 * 1024;
