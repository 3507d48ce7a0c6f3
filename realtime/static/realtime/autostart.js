/**
 * Starts the client configured by `{% realtime_client %}`: one per
 * `<script data-realtime-client>` on the page (see RealtimeClient.fromScript).
 */
import { RealtimeClient } from "./realtime.js";

for (const script of document.querySelectorAll("script[data-realtime-client]")) {
  if (!script.realtimeClient) RealtimeClient.fromScript(script);
}
