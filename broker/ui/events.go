package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// heartbeat keeps proxies from closing an idle feed.
const heartbeat = 15 * time.Second

// events is the live feed (Server-Sent Events): each event on the signed-in
// user's own grants as it happens, on any replica (the core tails the
// shared audit log). It ends when the browser leaves or the server stops.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, v *visitor) {
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would end the request's context mid-feed:
	// a feed reads nothing after its request line.
	rc.SetReadDeadline(time.Time{})
	items, cancel := h.core.Subscribe(v.Customer)
	defer cancel()
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The server's WriteTimeout would cut a long feed: each write sets its
	// own deadline instead.
	write := func(s string) bool {
		rc.SetWriteDeadline(time.Now().Add(heartbeat + 10*time.Second))
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 2000\n: live feed of your grants\n\n") {
		return
	}
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-t.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case it := <-items:
			data, _ := json.Marshal(it)
			if !write(fmt.Sprintf("id: %d\nevent: grant\ndata: %s\n\n", it.ID, data)) {
				return
			}
		}
	}
}
