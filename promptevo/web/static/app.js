// promptevo serve: live refresh and keyboard judging. Text from the server goes in with
// textContent only; the page's token goes with every state-changing request.
"use strict";

const token = document.querySelector('meta[name="promptevo-token"]').content;

function watch() {
  const version = document.body.dataset.version;
  if (version === undefined) return;
  const run = document.body.dataset.run;
  const url = "/api/version" + (run ? "?run=" + encodeURIComponent(run) : "");
  const live = document.getElementById("live");
  // A pair being judged is never swapped under the user: new images are announced and come in
  // with the next pair (each judgement loads the next page).
  const judgingPair = document.getElementById("pair") !== null;
  const news = document.getElementById("news");
  setInterval(async () => {
    try {
      const r = await fetch(url, {cache: "no-store"});
      if (!r.ok) throw new Error("status " + r.status);
      const now = (await r.json()).version;
      live.textContent = "live";
      live.className = "live ok";
      if (now === version) return;
      if (!judgingPair) location.reload();
      else if (news) news.textContent = "New images have arrived since this page loaded; they come into the next pairs.";
    } catch (e) {
      live.textContent = "server unreachable";
      live.className = "live down";
    }
  }, 1500);
}

function judging() {
  const pair = document.getElementById("pair");
  if (!pair) return;
  const message = document.getElementById("message");
  let busy = false;
  async function send(choice) {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/api/runs/" + encodeURIComponent(pair.dataset.run) + "/judgements", {
        method: "POST",
        headers: {"content-type": "application/json", "x-promptevo-token": token},
        body: JSON.stringify({left: Number(pair.dataset.left), right: Number(pair.dataset.right), choice: choice}),
      });
      if (!r.ok) {
        message.textContent = (await r.json()).error || ("error " + r.status);
        busy = false;
        return;
      }
      location.reload();
    } catch (e) {
      message.textContent = "could not reach the server";
      busy = false;
    }
  }
  const keys = {ArrowLeft: "left", "1": "left", ArrowRight: "right", "2": "right",
                ArrowUp: "both", b: "both", ArrowDown: "neither", n: "neither"};
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const choice = keys[e.key];
    if (choice) { e.preventDefault(); send(choice); }
  });
  for (const b of pair.querySelectorAll("button[data-choice]")) b.addEventListener("click", () => send(b.dataset.choice));
}

watch();
judging();
