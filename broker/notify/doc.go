// Package notify delivers the durable outbox: it leases due messages (one
// sender across replicas), renders each storage.Notice, sends it by SMTP or
// as a signed webhook through a dialer that refuses non-public addresses,
// and records delivery or schedules a retry. Which messages exist is decided
// when their audit event is written; this package only delivers.
package notify
