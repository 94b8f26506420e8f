// A real OpenID Provider for the sign-in tests: the certified `oidc-provider` package on loopback.
// Usage: REFSHEET_OIDC_PROVIDER_DIR=<folder with node_modules/oidc-provider> \
//        node provider.mjs <port> <client_id> <client_secret> <redirect_uri>
// Accounts: alice, bob, carol (example.test), eve (elsewhere.test), mallory (a name that is a Markdown
// payload), ghost (no email_verified claim, as Microsoft Entra sends it); the development login screens
// of the package accept any password. Never for production: it keeps everything in memory.
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const installed = join(process.env.REFSHEET_OIDC_PROVIDER_DIR, "node_modules", "oidc-provider", "lib", "index.js");
const { default: Provider } = await import(pathToFileURL(installed).href);

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const accounts = {
  alice: { email: "alice@example.test", email_verified: true, name: "Alice Liddell" },
  bob: { email: "bob@example.test", email_verified: true, name: "Bob Builder" },
  carol: { email: "carol@example.test", email_verified: true, name: "Carol Admin" },
  eve: { email: "eve@elsewhere.test", email_verified: true, name: "Eve Outsider" },
  mallory: {
    email: "mallory@example.test",
    email_verified: true,
    name: "Mallory ![m](https:evil.test/name) <img src=https://evil.test/i> www.evil.com",
  },
  ghost: { email: "ghost@example.test", name: "Ghost Unverified" },
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: [redirectUri], // Streamlit's st.logout comes back the same way
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  scopes: ["openid", "email", "profile"],
  async findAccount(ctx, id) {
    if (!accounts[id]) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...accounts[id] }; } };
  },
  conformIdTokenClaims: false, // put email and name in the ID token itself, where st.user reads them
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => false },
  cookies: { keys: ["a test key, nothing secret"] },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc-provider listening on ${port}`));
