/*
 * offloadFetch(url, options): fetch() for endpoints served by offload.
 *
 * offload answers a GET it has not computed yet with an empty 202 Accepted and
 * a Retry-After header: "not yet, ask again". offloadFetch asks again, waiting
 * as long as Retry-After says (and a little longer each time, up to maxDelay),
 * until the answer is something else, and resolves with that final Response,
 * exactly as fetch() would have (check response.ok as usual). A 503 with
 * Retry-After (offload's queue is full, or its backend is down) is asked
 * again the same way.
 *
 * Each request says "Prefer: wait=N" (RFC 7240): a server that supports it
 * may hold the request up to N seconds and answer 200 at once; one that does
 * not ignores it.
 *
 * Options: everything fetch() takes (headers, signal, credentials, ...), and
 *   deadline  milliseconds after which it rejects with a TimeoutError (60000)
 *   wait      seconds for Prefer: wait (10; 0 sends no Prefer header)
 *   maxDelay  the longest pause between two tries, in milliseconds (5000),
 *             unless the server's Retry-After asks for longer
 *   onPending a function called with each 202 (or 503) Response
 * An AbortSignal in options.signal stops it: it rejects with the signal's reason.
 *
 *   <script src="/_offload/offload.js"></script>
 *   offloadFetch("/report?year=2024", {deadline: 30000})
 *     .then((response) => response.text())
 *     .then((text) => { document.querySelector("#report").textContent = text; });
 *
 * No dependencies; a classic script (window.offloadFetch) or a CommonJS module.
 */
(function (root) {
  "use strict";

  const FIRST_DELAY = 500;

  function retryAfter(response) {
    const value = (response.headers.get("Retry-After") || "").trim();
    if (/^\d+$/.test(value)) {
      return Number(value) * 1000;
    }
    const date = Date.parse(value);
    return Number.isNaN(date) ? 0 : Math.max(0, date - Date.now());
  }

  function pending(response) {
    return response.status === 202 || (response.status === 503 && response.headers.has("Retry-After"));
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async function offloadFetch(url, options) {
    const { deadline = 60000, wait = 10, maxDelay = 5000, onPending, signal, ...init } = options || {};
    const started = Date.now();
    const stop = new AbortController();
    const onAbort = () => stop.abort(signal.reason);
    if (signal) {
      if (signal.aborted) {
        throw signal.reason;
      }
      signal.addEventListener("abort", onAbort, { once: true });
    }
    const timer = setTimeout(() => {
      stop.abort(new DOMException(`offloadFetch: no answer for ${url} within ${deadline} ms`, "TimeoutError"));
    }, deadline);
    let backoff = FIRST_DELAY;
    try {
      for (;;) {
        const headers = new Headers(init.headers);
        const left = Math.floor((deadline - (Date.now() - started)) / 1000);
        if (wait > 0 && left >= 1 && !headers.has("Prefer")) {
          headers.set("Prefer", `wait=${Math.min(wait, left)}`);
        }
        const response = await fetch(url, { ...init, headers, signal: stop.signal });
        if (!pending(response)) {
          return response;
        }
        if (onPending) {
          onPending(response);
        }
        await response.arrayBuffer(); // an empty body, read so the connection is reused
        const asked = retryAfter(response);
        await sleep(Math.max(asked, Math.min(backoff, maxDelay)), stop.signal);
        backoff *= 2;
      }
    } finally {
      clearTimeout(timer);
      if (signal) {
        signal.removeEventListener("abort", onAbort);
      }
    }
  }

  root.offloadFetch = offloadFetch;
  if (typeof module === "object" && module.exports) {
    module.exports = { offloadFetch };
  }
})(typeof globalThis === "object" ? globalThis : this);
