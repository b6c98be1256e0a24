// A client of Switchboard written against the generated types: the `/chat` and
// `/realtime` events it listens for, the acks it awaits, and the HTTP API it calls.
// CI type-checks it (`npm run check`) against generated/, so a change of a payload's
// Rust type that breaks a client breaks this file first.
import type {
  AvailabilityUpdate,
  ChatMessage,
  ChatRefusal,
  ErrorBody,
  HistoryPage,
  JoinAck,
  LockAnswer,
  MemberRemoved,
  MessageAck,
  OrderOutcome,
  PostMessage,
  PresenceUpdate,
  PublishRequest,
  Published,
  ReadReceipt,
  RoomInfo,
  Sent,
  UserInRoom,
  UserPresence,
} from "./generated/index";

/** What `/chat` sends, by event name. */
export interface ChatEvents {
  message: (m: ChatMessage) => void;
  "message:edited": (m: ChatMessage) => void;
  "message:deleted": (m: ChatMessage) => void;
  user_joined: (e: UserInRoom) => void;
  user_left: (e: UserInRoom) => void;
  typing: (e: UserInRoom) => void;
  "typing:start": (e: UserInRoom) => void;
  "typing:stop": (e: UserInRoom) => void;
  read: (r: ReadReceipt) => void;
  "presence:update": (p: PresenceUpdate) => void;
  "room:added": (r: RoomInfo) => void;
  "room:member_removed": (r: MemberRemoved) => void;
  error: (e: ChatRefusal) => void;
}

/** What `/realtime` sends, by event name (a few of them). */
export interface RealtimeEvents {
  "availability-update": (a: AvailabilityUpdate) => void;
  "lock-tickets-response": (a: LockAnswer) => void;
  "order-completed": (o: OrderOutcome) => void;
  "order-cancelled": (o: OrderOutcome) => void;
}

/** The part of a socket.io-client `Socket` this example needs. */
export interface TypedSocket<Events> {
  on<E extends keyof Events & string>(event: E, listener: Events[E]): unknown;
  emitWithAck(event: string, ...args: unknown[]): Promise<unknown>;
}

/** A room's state as a chat page keeps it. */
export class ChatRoom {
  readonly messages: ChatMessage[] = [];
  readonly typing = new Set<string>();
  readonly presence = new Map<string, PresenceUpdate>();

  constructor(
    private readonly socket: TypedSocket<ChatEvents>,
    readonly roomId: string,
  ) {
    socket.on("message", (m) => {
      if (m.roomId === this.roomId) this.messages.push(m);
    });
    socket.on("message:edited", (m) => this.replace(m));
    socket.on("message:deleted", (m) => this.replace(m));
    socket.on("typing:start", (e) => this.typing.add(e.userId));
    socket.on("typing:stop", (e) => this.typing.delete(e.userId));
    socket.on("presence:update", (p) => this.presence.set(p.userId, p));
    socket.on("read", (r) => {
      for (const m of this.messages) {
        if (Number(m.id) <= Number(r.messageId) && m.senderId !== r.userId) {
          if (!m.readBy.includes(r.userId)) m.readBy.push(r.userId);
          m.status = "read";
        }
      }
    });
  }

  private replace(m: ChatMessage): void {
    const i = this.messages.findIndex((x) => x.id === m.id);
    if (i >= 0) this.messages[i] = m;
  }

  async join(): Promise<JoinAck> {
    return (await this.socket.emitWithAck("join", { roomId: this.roomId })) as JoinAck;
  }

  /** Sends with a client id, so a retry after a reconnect never duplicates. */
  async send(content: string, clientMsgId: string): Promise<ChatMessage> {
    const ack = (await this.socket.emitWithAck("message", {
      roomId: this.roomId,
      content,
      clientMsgId,
    })) as Sent | ChatRefusal;
    if (!ack.success) throw new Error(ack.error);
    return ack.message;
  }

  async edit(id: string, content: string): Promise<ChatMessage> {
    const ack = (await this.socket.emitWithAck("message:edit", { id, content })) as
      | MessageAck
      | ChatRefusal;
    if (!ack.success) throw new Error(ack.error);
    return ack.message;
  }
}

/** The HTTP API with an API key. */
export class Api {
  constructor(
    private readonly base: string,
    private readonly key: string,
  ) {}

  private async call<T>(path: string, init: RequestInit = {}): Promise<T> {
    const res = await fetch(`${this.base}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${this.key}`, "content-type": "application/json" },
    });
    if (!res.ok) throw new Error(((await res.json()) as ErrorBody).error);
    return (await res.json()) as T;
  }

  publish(req: PublishRequest): Promise<Published> {
    return this.call("/api/publish", { method: "POST", body: JSON.stringify(req) });
  }

  post(room: string, msg: PostMessage): Promise<Sent> {
    const path = `/api/rooms/${encodeURIComponent(room)}/messages`;
    return this.call(path, { method: "POST", body: JSON.stringify(msg) });
  }

  history(room: string, before?: string): Promise<HistoryPage> {
    const q = before === undefined ? "" : `?before=${encodeURIComponent(before)}`;
    return this.call(`/api/rooms/${encodeURIComponent(room)}/messages${q}`);
  }

  presence(users: string[]): Promise<UserPresence[]> {
    return this.call(`/api/presence?users=${users.map(encodeURIComponent).join(",")}`);
  }
}

/** "online", "away", or "last seen 5 min ago". */
export function presenceLine(p: UserPresence, now: number): string {
  if (p.status !== "offline") return p.status;
  if (p.lastSeen === null) return "offline";
  return `last seen ${Math.round((now - p.lastSeen) / 60000)} min ago`;
}

// A message exactly as the server sends it (crates/switchboard/tests/typescript.rs
// pins the same bytes).
export const sample: ChatMessage = {
  clientMsgId: "c1",
  content: "hi",
  createdAt: 5,
  id: "7",
  readBy: ["bob"],
  roomId: "r",
  senderId: "ana",
  status: "read",
  type: "text",
};

// What the types refuse: each line below must stay an error.
// @ts-expect-error: no such status
export const badStatus: ChatMessage = { ...sample, status: "seen" };
// @ts-expect-error: a system message is sent only through the HTTP API, but `type` is a known word
export const badType: PostMessage = { content: "x", type: "video" };
// @ts-expect-error: ids are strings on the wire
export const badId: ChatMessage = { ...sample, id: 7 };
