// copiste's own script: the pages work without it; it adds live job
// progress (Server-Sent Events), search as you type, and a refresh of
// list pages that pauses while the tab is hidden.
"use strict";

// The job states as the pages name them (the event stream sends the
// API's names).
const STATES = {
  queued: "en attente",
  running: "en cours",
  succeeded: "terminé",
  failed: "terminé avec des refus",
  dead: "en échec",
  cancelled: "annulé",
};

// Live progress of a job page: <div data-job-events="URL">.
for (const box of document.querySelectorAll("[data-job-events]")) {
  const source = new EventSource(box.dataset.jobEvents);
  const status = document.querySelector("[data-job-status]");
  const bar = document.querySelector("[data-job-progress]");
  const percent = document.querySelector("[data-job-percent]");
  const show = (event) => {
    const job = JSON.parse(event.data);
    if (status) status.textContent = STATES[job.status] || status.textContent;
    if (bar && job.total) {
      bar.max = job.total;
      bar.value = job.done || 0;
    }
    if (percent) {
      const p = job.total ? Math.floor((100 * (job.done || 0)) / job.total) : (job.status === "succeeded" ? 100 : 0);
      percent.textContent = p + " %";
    }
  };
  source.addEventListener("progress", show);
  source.addEventListener("done", (event) => {
    show(event);
    source.close();
    // The finished job's page shows its outcome (links of a zip).
    setTimeout(() => window.location.reload(), 300);
  });
}

// Search as you type: a form with data-live-search fills #results.
for (const form of document.querySelectorAll("form[data-live-search]")) {
  const input = form.querySelector("input[name=q]");
  const results = document.getElementById("results");
  if (!input || !results) continue;
  let timer = null;
  let asked = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (input.value.trim() === "") return;
      const n = ++asked;
      const url = form.action + "?" + new URLSearchParams(new FormData(form));
      const response = await fetch(url, { headers: { "X-Requested-With": "fetch" } });
      if (n !== asked) return; // a later keystroke's answer wins
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const found = page.getElementById("results");
      results.replaceChildren(...(found ? found.childNodes : []));
    }, 200);
  });
}

// Refresh of list sections (<section data-refresh>) every 5 s while the
// tab is visible: the timer stops when the tab is hidden
// (document.hidden) and starts again, with an immediate refresh, when it
// is shown.
const refreshed = document.querySelectorAll("section[data-refresh]");
if (refreshed.length > 0) {
  let timer = null;
  const refresh = async () => {
    if (document.hidden) return;
    let response;
    try {
      response = await fetch(window.location.href, { headers: { "X-Requested-With": "fetch" } });
    } catch {
      return; // the next tick tries again
    }
    if (!response.ok || document.hidden) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const section of refreshed) {
      const fresh = page.querySelector(`section[data-refresh="${section.dataset.refresh}"]`);
      if (fresh) section.replaceChildren(...fresh.childNodes);
    }
    document.documentElement.dataset.refreshed = String(Number(document.documentElement.dataset.refreshed || 0) + 1);
  };
  // The refresh's state is shown on <html data-refreshing> ("on" or
  // "paused"), and each refresh counted in data-refreshed.
  const start = () => {
    if (timer === null) timer = setInterval(refresh, 5000);
    document.documentElement.dataset.refreshing = "on";
  };
  const stop = () => {
    clearInterval(timer);
    timer = null;
    document.documentElement.dataset.refreshing = "paused";
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      stop();
    } else {
      refresh();
      start();
    }
  });
  if (document.hidden) stop();
  else start();
}

// The harmonisation form: typing numéros or choosing a file selects
// "these copies" (the server refuses a list with "all" anyway).
for (const form of document.querySelectorAll("form.pass")) {
  const list = form.querySelector("input[name=selection][value=list]");
  if (!list) continue;
  const choose = () => {
    list.checked = true;
  };
  form.querySelector("textarea[name=numeros]")?.addEventListener("input", choose);
  form.querySelector("input[name=fichier]")?.addEventListener("change", choose);
}
