// A client of Switchboard written against the generated types: the `/chat` and
// `/realtime` events it sends (ChatRequests, RealtimeRequests, WsChatAction) and listens
// for, the acks it awaits, and the HTTP API it calls.
// CI type-checks it (`npm run check`) against generated/, so a change of a payload's
// Rust type that breaks a client breaks this file first.
import type {
  AvailabilityUpdate,
  ChatMessage,
  ChatRequests,
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
  RealtimeRequests,
  RoomInfo,
  Sent,
  UserInRoom,
  UserPresence,
  WsChatAction,
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

/** The part of a socket.io-client `Socket` this example needs: what it hears
 * (`Events`), and what it may send, each event with its argument (`Requests`). */
export interface TypedSocket<Events, Requests> {
  on<E extends keyof Events & string>(event: E, listener: Events[E]): unknown;
  emitWithAck<E extends keyof Requests & string>(event: E, data: Requests[E]): Promise<unknown>;
}

/** A `/chat` socket. */
export type ChatSocket = TypedSocket<ChatEvents, ChatRequests>;
/** A `/realtime` socket. */
export type RealtimeSocket = TypedSocket<RealtimeEvents, RealtimeRequests>;

/** A room's state as a chat page keeps it. */
export class ChatRoom {
  readonly messages: ChatMessage[] = [];
  readonly typing = new Set<string>();
  readonly presence = new Map<string, PresenceUpdate>();

  constructor(
    private readonly socket: ChatSocket,
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

  /** `typing` takes the room id alone too. */
  startTyping(): Promise<unknown> {
    return this.socket.emitWithAck("typing", this.roomId);
  }

  /** The page before message `before`, newest last. */
  async older(before: string): Promise<HistoryPage> {
    const page = await this.socket.emitWithAck("history", { roomId: this.roomId, before, limit: 50 });
    return page as HistoryPage;
  }

  markRead(messageId: string): Promise<unknown> {
    return this.socket.emitWithAck("read", { roomId: this.roomId, messageId });
  }

  away(): Promise<unknown> {
    return this.socket.emitWithAck("presence:update", { status: "away" });
  }

  heartbeat(): Promise<unknown> {
    return this.socket.emitWithAck("presence:heartbeat", null);
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

/** Holds seats on `/realtime` (ids as numbers or numeric strings). */
export async function hold(socket: RealtimeSocket, eventId: number, categoryId: number): Promise<LockAnswer> {
  await socket.emitWithAck("join-event-room", { eventId });
  const ack = await socket.emitWithAck("lock-tickets", { eventId, categoryId: String(categoryId), quantity: 2 });
  return ack as LockAnswer;
}

/** A `/ws` chat action as a frame: the event's fields beside `action`, and an `ack` id. */
export function wsFrame(action: WsChatAction, ack?: number): string {
  return JSON.stringify(ack === undefined ? action : { ...action, ack });
}
export const wsTyping = wsFrame({ action: "typing", roomId: "r" });
export const wsSend = wsFrame({ action: "message", roomId: "r", content: "hi", clientMsgId: "c2" }, 1);

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

// What clients send, refused by the types as the server refuses it:
declare const chat: ChatSocket;
declare const realtime: RealtimeSocket;
// @ts-expect-error: a message needs content
void chat.emitWithAck("message", { roomId: "r" });
// @ts-expect-error: `system` messages come only from the HTTP API
void chat.emitWithAck("message", { roomId: "r", content: "x", type: "system" });
// @ts-expect-error: a read names the message (messageId), not only the room
void chat.emitWithAck("read", { roomId: "r" });
// @ts-expect-error: `message` takes an object, not the room id alone (only join, leave and typing do)
void chat.emitWithAck("message", "r");
// @ts-expect-error: offline is not a status a user chooses
void chat.emitWithAck("presence:update", { status: "offline" });
// @ts-expect-error: owners are made by creating a room, not by room:role
void chat.emitWithAck("room:role", { roomId: "r", userId: "bob", role: "owner" });
// @ts-expect-error: no such event
void chat.emitWithAck("mesage", { roomId: "r", content: "x" });
// @ts-expect-error: lock-tickets needs a quantity
void realtime.emitWithAck("lock-tickets", { eventId: 1, categoryId: 2 });
// @ts-expect-error: on /ws a room is always {roomId}
export const badWs: WsChatAction = { action: "join", room: "r" };
