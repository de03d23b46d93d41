// The relay's one vocabulary of log events and refusal reasons. Every `event` field of a log
// line, every `reason` of a refusal (its log line, its metrics label, `smarthost stats`) is a
// name from the tables below, and nothing else type-checks: `log.info(msg, {event: 'acepted'})`
// fails to build. Users' log queries and alerts depend on these names: add, never rename.
//
// Adding an event or a reason is one line here, plus its row in README's "Logs" tables (a unit
// test, test/unit/events.test.ts, fails until the README names it).

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface EventSpec {
  /** The level(s) it is logged at. */
  readonly level: LogLevel | readonly LogLevel[];
  /** When it is logged, in words (the README's "When" column says the same). */
  readonly when: string;
  /** The metric that counts what the event reports, when one does. */
  readonly metric?: string;
}

/** Every log event, by name. One line each. */
// prettier-ignore
export const EVENTS = {
  // start-up and shutdown
  started: { level: 'info', when: 'the relay is running' },
  listening: { level: 'info', when: 'a listener is open' },
  upstream: { level: 'info', when: 'where mail goes (the upstreams, in order)' },
  capture_mode: { level: 'warn', when: 'no upstream: messages go to the outbox, nothing is sent' },
  metrics_listening: { level: 'info', when: 'the metrics listener is open' },
  control_listening: { level: 'debug', when: 'the control socket is open' },
  tls_selfsigned: { level: 'warn', when: 'no tls.cert: a self-signed certificate is made' },
  tls_loaded: { level: 'info', when: 'the TLS certificate in use at start', metric: 'smarthost_tls_certificate_expiry_timestamp_seconds' },
  tls_reloaded: { level: 'info', when: 'a renewed TLS certificate is in force', metric: 'smarthost_tls_certificate_expiry_timestamp_seconds' },
  tls_reload_failed: { level: 'error', when: 'a new TLS pair was refused, the old one stays' },
  tls_certificate_expired: { level: 'error', when: 'the TLS certificate in use has expired' },
  tls_certificate_expiring: { level: 'warn', when: 'the TLS certificate expires within 14 days' },
  ready: { level: 'info', when: '/readyz answers 200 again' },
  not_ready: { level: 'warn', when: '/readyz answers 503 (the reason)' },
  spool_mode_tightened: { level: 'warn', when: 'a spool folder open to other users was set to 0700' },
  spool_swept: { level: 'info', when: 'the leftovers of an interrupted run were swept' },
  start_failed: { level: 'error', when: 'the relay could not start' },
  control_failed: { level: 'error', when: 'no control socket: the CLI cannot reach this relay' },
  stopping: { level: 'info', when: 'shutdown begins' },
  stopped: { level: 'info', when: 'shutdown is complete' },
  stop_failed: { level: 'error', when: 'an error while stopping' },
  signal: { level: 'info', when: 'a signal was received' },
  // reception
  accepted: { level: 'info', when: 'a message is on disk, 250 sent', metric: 'smarthost_messages_accepted_total' },
  refused: { level: 'info', when: 'any refusal the relay sends', metric: 'smarthost_refusals_total' },
  auth: { level: 'info', when: 'a client logged in' },
  auth_failed: { level: 'warn', when: 'a login failed', metric: 'smarthost_refusals_total' },
  auth_lockout: { level: 'warn', when: 'an address is locked out after failed logins' },
  sender_rewritten: { level: 'info', when: 'the sender was changed per policy' },
  spool_error: { level: 'error', when: 'the disk failed while a message was received' },
  handover_error: { level: 'error', when: 'after its 250, a message did not reach the queue (it is on disk)' },
  listener_error: { level: 'error', when: 'an SMTP listener failed' },
  tls_failed: { level: 'warn', when: 'a TLS handshake with a client failed (logged once per connection)' },
  proxy_rejected: { level: 'warn', when: 'a proxyProtocol listener closed a connection with a missing or malformed PROXY header' },
  // delivery
  delivered: { level: 'info', when: 'the ESP took it', metric: 'smarthost_delivery_attempts_total' },
  deferred: { level: 'warn', when: 'temporary failure, will retry', metric: 'smarthost_delivery_attempts_total' },
  failed: { level: 'warn', when: 'permanent failure (5xx from the ESP)', metric: 'smarthost_dead_letters' },
  expired: { level: 'warn', when: 'still failing after queue.maxAge', metric: 'smarthost_dead_letters' },
  attempt_error: { level: 'error', when: 'the disk failed during a delivery attempt' },
  incomplete_removed: { level: 'warn', when: 'the files of a reception a crash cut short were swept' },
  body_damaged: { level: 'error', when: 'a body does not match its checksum', metric: 'smarthost_dead_letters' },
  delivery_thread_failed: { level: 'error', when: 'the delivery thread failed or stopped' },
  burst_started: { level: 'info', when: 'a burst: new messages wait (queue.acceptFirst) so senders are answered first' },
  burst_ended: { level: 'info', when: 'the burst eased: the messages held go to the ESP' },
  // bounces
  bounced: { level: 'info', when: 'a bounce was queued', metric: 'smarthost_bounces_total' },
  bounce_dropped: { level: 'warn', when: 'a bounce could not be sent anywhere' },
  bounce_not_requested: { level: 'info', when: 'no bounce: the sender asked for none (NOTIFY)' },
  bounce_to_rewritten_sender: { level: 'warn', when: 'a bounce went to a rewritten sender' },
  // upstreams
  upstream_down: { level: 'warn', when: 'an upstream is failing, skipped', metric: 'smarthost_upstream_up' },
  upstream_up: { level: 'info', when: 'an upstream is back', metric: 'smarthost_upstream_up' },
  upstream_ready: { level: 'info', when: 'an upstream answered its check (its SIZE)' },
  upstream_check_failed: { level: 'warn', when: 'an upstream did not pass its check' },
  failover: { level: 'info', when: 'an upstream failed temporarily, the next is tried' },
  upstream_throttled: { level: 'warn', when: 'an upstream asks to slow down', metric: 'smarthost_upstream_throttled_total' },
  upstream_pace_recovered: { level: 'info', when: 'replies are clean again, the pace recovers' },
  upstream_changed: { level: ['info', 'warn'], when: 'a reload changed the upstreams' },
  upstream_close_failed: { level: 'warn', when: 'the previous upstream connections did not close cleanly' },
  reload_retry: { level: 'info', when: 'queued mail is retried at once after a reload' },
  // config, control socket, metrics listener
  retention_swept: { level: ['info', 'debug'], when: 'the hourly sweep of old dead letters and captured messages', metric: 'smarthost_retention_removed_total' },
  retention_failed: { level: 'warn', when: 'a retention sweep failed' },
  maildrop_error: { level: 'error', when: 'the maildrop folder could not be read or a file taken' },
  maildrop_discarded: { level: 'warn', when: 'a maildrop file that is no well-formed message was removed' },
  reloaded: { level: 'info', when: 'the config was reloaded' },
  reload_failed: { level: 'error', when: 'a reload was refused, the old config keeps running' },
  reload_restart_needed: { level: 'warn', when: 'a reload changed keys that need a restart' },
  watch_error: { level: 'warn', when: 'the config file cannot be watched' },
  control_error: { level: 'error', when: 'the control socket failed' },
  metrics_error: { level: 'error', when: 'the metrics listener failed' },
  // cluster mode (src/cluster/); smarthost_cluster_degraded is not named as their metric: it
  // exists only in cluster mode, and the monitoring test scrapes a relay without Redis.
  cluster_connected: { level: 'info', when: 'cluster mode: limits are shared through Redis' },
  cluster_degraded: { level: 'warn', when: 'Redis unavailable or slow: this relay uses its own limits (logged once)' },
  cluster_restored: { level: 'info', when: 'Redis is back: limits are shared again' },
} as const satisfies Record<string, EventSpec>;

export type EventName = keyof typeof EVENTS;
export const EVENT_NAMES = Object.keys(EVENTS) as EventName[];

export interface ReasonSpec {
  /**
   * `connection`: instead of the greeting (smarthost_connections_refused_total, no source);
   * `command`: a reply to AUTH, MAIL, RCPT or DATA (smarthost_messages_refused_total).
   */
  readonly stage: 'connection' | 'command';
  /** A rate limit was reached (smarthost_rate_limit_hits_total, the rate-limited column of stats). */
  readonly rateLimit?: true;
  readonly meaning: string;
}

/** Every refusal reason, by name. One line each. */
// prettier-ignore
export const REFUSAL_REASONS = {
  not_allowed: { stage: 'command', meaning: 'not in the allowlist and not logged in' },
  tls_required: { stage: 'command', meaning: 'the port requires STARTTLS first' },
  insecure_auth: { stage: 'command', meaning: 'AUTH before STARTTLS' },
  auth_failed: { stage: 'command', meaning: 'wrong user or password' },
  // At connect or at AUTH; counted with the command refusals.
  auth_lockout: { stage: 'command', meaning: 'too many failed logins from the address' },
  max_connections: { stage: 'connection', meaning: 'limits.maxConnections reached' },
  max_connections_per_ip: { stage: 'connection', meaning: 'limits.maxConnectionsPerIp reached' },
  shutdown: { stage: 'connection', meaning: 'the relay is shutting down' },
  max_untrusted_connections: { stage: 'connection', meaning: 'limits.maxUntrustedConnections reached by clients outside the allowlist' },
  refused_commands: { stage: 'command', meaning: 'limits.maxRefusedCommands refused commands: the session is closed' },
  timeout: { stage: 'command', meaning: 'a command or DATA did not complete within its deadline' },
  auth_before_starttls: { stage: 'command', meaning: 'AUTH before STARTTLS where AUTH needs TLS' },
  no_postmaster: { stage: 'command', meaning: 'RCPT TO:<postmaster> with no bounces.to set' },
  rate_limit: { stage: 'command', rateLimit: true, meaning: "the source's rateLimit reached" },
  recipient_rate_limit: { stage: 'command', rateLimit: true, meaning: "the source's recipientRateLimit reached" },
  recipients: { stage: 'command', meaning: 'too many recipients for one message' },
  size: { stage: 'command', meaning: 'message over the size limit' },
  recipient_domain: { stage: 'command', meaning: 'recipient domain not allowed for the source' },
  sender_not_allowed: { stage: 'command', meaning: "sender not in the source's allowedSenders" },
  bad_address: { stage: 'command', meaning: 'a malformed or unroutable address' },
  bad_parameter: { stage: 'command', meaning: 'a malformed or unsupported MAIL/RCPT parameter' },
  header_too_large: { stage: 'command', meaning: 'the header section is over its limits' },
  header_line_too_long: { stage: 'command', meaning: 'a header line over 998 characters' },
  client_disconnected: { stage: 'command', meaning: 'the client left before the end of DATA' },
  disk_full: { stage: 'command', meaning: 'no room left in the spool' },
  spool_error: { stage: 'command', meaning: 'the spool could not be written' },
  refused: { stage: 'command', meaning: 'a refusal without a more specific reason' },
} as const satisfies Record<string, ReasonSpec>;

export type RefusalReason = keyof typeof REFUSAL_REASONS;
export const REFUSAL_REASON_NAMES = Object.keys(REFUSAL_REASONS) as RefusalReason[];

/** The reason's entry; an unknown name (from outside the type system) reads as `refused`. */
/** Whether a name (from JSON, say) is one of the refusal reasons. */
export function isRefusalReason(name: unknown): name is RefusalReason {
  return typeof name === 'string' && Object.hasOwn(REFUSAL_REASONS, name);
}

export function reasonSpec(reason: string): ReasonSpec {
  return Object.hasOwn(REFUSAL_REASONS, reason)
    ? REFUSAL_REASONS[reason as RefusalReason]
    : REFUSAL_REASONS.refused;
}

/** A refusal instead of the greeting (it refuses a connection, not a command). */
export function isConnectionReason(reason: string): boolean {
  return reasonSpec(reason).stage === 'connection';
}

/** A refusal because a rate limit was reached (message or recipient rate). */
export function isRateLimitReason(reason: string): boolean {
  return reasonSpec(reason).rateLimit === true;
}
