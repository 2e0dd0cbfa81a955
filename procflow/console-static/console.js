// Refreshes the instances list every few seconds without reloading the page: the server
// renders the list (escaped) and this swaps it in. Served as a file because the content
// security policy forbids inline scripts.
"use strict";
(function () {
  const listing = document.getElementById("listing");
  if (!listing) return;
  const url = listing.dataset.refresh;
  const seconds = Number(listing.dataset.seconds) || 5;
  async function refresh() {
    try {
      const answer = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (answer.ok) listing.innerHTML = await answer.text();
    } catch (error) {
      // The server is restarting or away: keep what is shown and try again later.
    }
  }
  window.setInterval(refresh, seconds * 1000);
})();
