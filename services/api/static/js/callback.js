// The OpenID Connect redirect target (/ui/callback): redeem the code, then back to the page that asked to sign in.

import { completeLogin, safeReturn } from "./auth.js";

const message = document.getElementById("error");

completeLogin(new URLSearchParams(location.search))
  .then((returnTo) => location.replace(safeReturn(returnTo)))
  .catch((err) => {
    message.hidden = false;
    message.textContent = `Sign-in failed: ${err.detail || err}`;
    document.getElementById("retry").hidden = false;
  });
