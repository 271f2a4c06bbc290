// actas self-service page: progressive enhancement only. Every form works
// without this file; it adds the copy button and the live feed.
"use strict";

(function copyButton() {
  const btn = document.getElementById("copy");
  if (!btn || !navigator.clipboard) return;
  btn.hidden = false;
  btn.addEventListener("click", async () => {
    const note = document.getElementById("copied");
    try {
      await navigator.clipboard.writeText(btn.dataset.copy);
      note.textContent = "Copied.";
    } catch (e) {
      note.textContent = "Copy failed: select the code and copy it by hand.";
    }
  });
})();

(function liveFeed() {
  const list = document.getElementById("feed");
  if (!list || !window.EventSource) return;
  const src = new EventSource("/ui/events");
  src.addEventListener("grant", (ev) => {
    const item = JSON.parse(ev.data);
    const li = document.createElement("li");
    li.className = "feed-" + item.kind;
    const time = document.createElement("time");
    time.dateTime = item.time;
    time.textContent = new Date(item.time).toLocaleTimeString();
    li.append(time, " ", item.text);
    list.prepend(li);
    const row = document.getElementById("grant-" + item.grant_id);
    if (row && (item.kind === "ended" || item.kind === "expired")) {
      row.classList.add("ended");
    }
  });
})();
