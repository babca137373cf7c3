// hearth's passkey buttons: WebAuthn through navigator.credentials, with
// the options and answers as JSON (WebAuthn Level 3 parse…FromJSON and
// toJSON). Every call carries the page's CSRF token; hearth checks the
// origin, the token and the answer itself.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  function csrf() { var f = document.querySelector("input[name=csrf]"); return f ? f.value : ""; }
  function say(text) { var m = $("passkey-msg"); if (m) { m.textContent = text; m.hidden = false; } }
  async function post(url, body) {
    body.csrf = csrf();
    var r = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    var j = {};
    try { j = await r.json(); } catch (e) { }
    if (!r.ok) { throw new Error(j.error || ("hearth answered " + r.status)); }
    return j;
  }
  function supported() {
    if (window.PublicKeyCredential && PublicKeyCredential.parseRequestOptionsFromJSON) { return true; }
    say("This browser cannot use passkeys here. Sign in with your password instead.");
    return false;
  }
  // get asks for options, has the authenticator sign them, and sends
  // the answer with the extra fields (the password of a second-factor
  // sign-in goes only with the answer, so that no reply says whether it
  // was right before the passkey was used).
  async function get(optionsURL, finishURL, body, extra) {
    var o = await post(optionsURL, body);
    var cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(o.publicKey) });
    var fin = extra || {};
    fin.ceremony = o.ceremony;
    fin.credential = cred.toJSON();
    var r = await post(finishURL, fin);
    location.assign(r.redirect);
  }
  function run(fn) {
    return function () {
      if (!supported()) { return; }
      fn().catch(function (e) { say(e.name === "NotAllowedError" ? "The passkey was not used (cancelled, or none for this site)." : e.message); });
    };
  }
  var signin = $("passkey-signin");
  if (signin) {
    signin.addEventListener("click", run(function () {
      return get("/.hearth/ui/passkey/login/options", "/.hearth/ui/passkey/login/finish", { username: ($("username") || {}).value || "" });
    }));
  }
  var second = $("passkey-second");
  if (second) {
    second.addEventListener("click", run(function () {
      return get("/.hearth/ui/passkey/second/options", "/.hearth/ui/passkey/second/finish", { username: $("username").value },
        { username: $("username").value, password: $("password").value });
    }));
  }
  var add = $("passkey-add");
  if (add) {
    add.addEventListener("click", run(async function () {
      var o = await post("/.hearth/ui/account/passkey/options", {});
      var cred = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(o.publicKey) });
      var r = await post("/.hearth/ui/account/passkey/finish", { ceremony: o.ceremony, label: ($("passkey-label") || {}).value || "", credential: cred.toJSON() });
      location.assign(r.redirect);
    }));
  }
  document.documentElement.dataset.passkeys = "ready";
})();
