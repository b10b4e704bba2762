// Package webhook implements AdCP task webhooks on both sides of the wire:
// the seller's event, URL guard and signed sender, and the buyer's
// verifying, deduplicating receiver.
//
// # Seller: one event, one body, many attempts
//
// A task that registered a push_notification_config gets a webhook for each
// status change after its initial response. ReadPushNotificationConfig
// reads and validates the registration from the task arguments (the URL
// through the SSRF guard, the operation_id the payload must echo, the
// optional token). NewDelivery builds the event once: a fresh random
// idempotency_key (never the request's key or the task id), the echoed
// operation_id and token, the task fields, a timestamp, and the result, all
// serialised to bytes once. Every attempt sends those bytes unchanged, so
// retries are identical byte for byte and receivers dedupe them by
// idempotency_key.
//
// A Sender posts a Delivery. It signs every attempt afresh with the seller's
// RFC 9421 key (httpsig.ProfileWebhook: new created, expires and nonce over
// the same body), connects only to public addresses, never follows a
// redirect and never goes through a proxy, and classifies the answer: 2xx is
// delivered; 408, 425, 429, 5xx, a plain 401 and network failures may be
// retried; 409, a 401 carrying a webhook_* signature error, other 4xx, 3xx,
// a refused address and an unsignable URL are permanent. Its RetryPolicy is
// the schedule of further attempts: exponential backoff with jitter, never
// past the delivery_retry_horizon_seconds that Sender.Capability declares in
// the webhook_signing block of get_adcp_capabilities.
//
// Package riverdelivery (a module of its own, for its River dependency)
// enqueues deliveries in the caller's transaction and works them with
// River's retries, so the business write, the stored idempotent answer and
// the webhook commit together or not at all.
//
// # The SSRF guard
//
// URLPolicy is the guard the spec requires for counterparty-supplied URLs:
// https only; no credentials; no host that is, or spells in decimal, octal
// or hexadecimal, a loopback, private, CGNAT, link-local, multicast,
// reserved or unspecified address, IPv4 or IPv6 (IPv4-mapped addresses are
// refused outright); any port unless a hardened port list is configured
// (see HardenedPorts). The same check runs again at connect time on the
// address actually dialled (net.Dialer.Control), so a host name that
// resolves to a private address, at registration or after a DNS rebinding,
// is refused. Errors never include the URL, which may carry the buyer's
// token.
//
// # Buyer: the receiver
//
// NewReceiver wraps the buyer's handler. For each POST it enforces
// Content-Type and the body size before any cryptography, runs the RFC 9421
// webhook verifier checklist (401 with WWW-Authenticate: Signature
// error="webhook_..." on failure), checks the envelope, and then runs the
// handler through idem.Do on an idem.Guard keyed by (sender,
// idempotency_key), where the sender is the verified keyid or what
// ReceiverConfig.SenderID maps it to. So a delivery is processed once: a
// duplicate gets the stored answer again, a duplicate that arrives while the
// first is still being processed gets 503 with Retry-After, the same key with
// a different payload gets 409, and a handler that fails (non-2xx) stores
// nothing, so the sender's retry runs it again. Use a Guard whose backend is
// shared by every receiver instance (Postgres or Redis) and whose TTL covers
// the sender's retry horizon.
package webhook
