// Server-Sent Events read from a fetch() body. EventSource cannot send an Authorization
// header, and the key must not go in a URL or a cookie, so the console reads the daemon's
// event streams with fetch and parses them here.

export interface SseEvent {
  event: string;
  data: string;
  id: string;
}

/** An incremental parser of the text/event-stream format (WHATWG HTML, 9.2.6). */
export class SseParser {
  private buf = '';
  private event = '';
  private data: string[] = [];
  private id = '';

  /** Feeds decoded text; returns the events it completed. */
  feed(text: string): SseEvent[] {
    this.buf += text;
    const out: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const nl = this.buf.slice(start).search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const end = start + nl;
      // A lone \r at the end of the buffer may be the start of \r\n: wait for more.
      if (this.buf[end] === '\r' && end + 1 === this.buf.length) break;
      const line = this.buf.slice(start, end);
      start = end + (this.buf.startsWith('\r\n', end) ? 2 : 1);
      this.line(line, out);
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === '') {
      if (this.data.length) out.push({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}
