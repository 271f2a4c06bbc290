// Package hooks is the ticket system's inbound webhook, POST
// /hooks/tickets: it checks the HMAC signature over timestamp and body and
// the timestamp window, parses the status change, and hands it to the
// core, which ends a solved or closed ticket's grants and refuses replays.
package hooks
