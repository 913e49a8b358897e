// Generated from /api/openapi.json and /api/asyncapi.json by src/http/typescript.rs.
// Do not edit: DISPATCHD_WRITE_TYPES=1 cargo test --lib typescript

/** The actions of `PATCH /api/orders/{id}/status`; who may take which is `actors::domain::lifecycle`'s. */
export type Action = "confirm" | "start_preparing" | "mark_ready" | "pick_up" | "deliver" | "cancel";

export type AddressInput = {
  city: string;
  instructions?: string | null;
  lat: number;
  lon: number;
  state: string;
  street: string;
  zip: string;
};

export type Approved = {
  approved: boolean;
  driverId: number;
};

export type AvailabilityInput = {
  available: boolean;
};

/** Whether cluster mode is on and, when it is, who holds each region. `ClusterView`'s shape, spelled out: utoipa turns a flattened `Option` into an `allOf` with `null`, which `{"enabled": false}` does not match (schemathesis found it). */
export type ClusterView = {
  enabled: boolean;
  /** With cluster mode on only, as the two below. */
  nodeId?: string | null;
  nodes?: string[] | null;
  regions?: RegionStatus[] | null;
};

export type CreatedWebhook = {
  /** The HMAC secret that signs deliveries: shown this once. */
  secret: string;
  webhook: Webhook;
};

export type Delivery = {
  attempts: number;
  createdAt: string;
  deliveredAt?: string | null;
  eventId: string;
  eventType: string;
  id: number;
  lastError?: string | null;
  lastStatus?: number | null;
  nextAttemptAt: string;
  /** `pending`, `delivered` or `failed`. */
  status: string;
  webhookId: number;
};

export type DeliveryAddress = {
  city: string;
  instructions?: string | null;
  lat: number;
  lon: number;
  state: string;
  street: string;
  zip: string;
};

export type DeliveryBody = {
  delivery: Delivery;
};

export type DeliveryList = {
  deliveries: Delivery[];
};

/** `{"ok": true}`: done, nothing else to say. */
export type Done = {
  ok: boolean;
};

export type Driver = {
  id: number;
  name: string;
  photoUrl?: string | null;
  rating: number;
  vehicleType: VehicleType;
};

/** A driver's position as clients see it. `timestamp` is milliseconds since the Unix epoch (the one timestamp in the contract that is not RFC 3339). */
export type DriverLocation = {
  driverId: number;
  heading?: number | null;
  lat: number;
  lon: number;
  speedMps?: number | null;
  timestamp: number;
};

/** The error body every failure carries (CONTRACT.md "Errors"). */
export type Error = {
  /** The machine-readable code; see [`ApiError::code`]. */
  code: ErrorCode;
  /** The failing fields (validation), the unavailable items, or the actors that are down (`/readyz`); empty otherwise. */
  details: FieldError[];
  /** A sentence for people. */
  error: string;
};

/** What went wrong, for programs: the status says how bad, the code says which. */
export type ErrorCode = "VALIDATION_ERROR" | "UNAUTHORIZED" | "INVALID_CREDENTIALS" | "FORBIDDEN" | "NOT_FOUND" | "METHOD_NOT_ALLOWED" | "INVALID_TRANSITION" | "VERSION_CONFLICT" | "EMAIL_TAKEN" | "IDEMPOTENCY_IN_PROGRESS" | "PAYLOAD_TOO_LARGE" | "RESTAURANT_CLOSED" | "ITEM_UNAVAILABLE" | "OUT_OF_RANGE" | "OUT_OF_ZONE" | "IDEMPOTENCY_KEY_REUSED" | "RATE_LIMITED" | "REQUEST_TIMEOUT" | "LIMIT_REACHED" | "STORE_UNAVAILABLE" | "ENGINE_UNAVAILABLE" | "INTERNAL_ERROR";

/** The `eta` field of order responses and pushes. */
export type Eta = {
  estimatedDeliveryAt: string;
  /** Whole seconds from now, never negative. */
  secondsRemaining: number;
};

export type EventList = {
  events: OrderEvent[];
};

export type FaultInput = {
  /** A core actor's name (`CoreActor::ALL`). */
  actor: string;
};

/** One failing field, named by its JSON path (`deliveryAddress.zip`, `items[2].quantity`). */
export type FieldError = {
  field: string;
  message: string;
};

export type Inside = {
  inside: boolean;
};

export type ItemBody = {
  item: MenuItem;
};

export type Killed = {
  killed: string;
};

export type LatLon = {
  lat: number;
  lon: number;
};

export type LatLonInput = {
  lat: number;
  lon: number;
};

export type LocationInput = {
  heading?: number | null;
  lat: number;
  lon: number;
  speedMps?: number | null;
  timestamp?: number | null;
};

export type LoginInput = {
  email: string;
  password: string;
};

export type MeResponse = {
  /** Drivers only: false until an admin approves the driver. */
  approved?: boolean | null;
  driver?: null | Driver;
  restaurantId?: number | null;
  user: User;
};

export type MenuItem = {
  category: string;
  description: string;
  id: number;
  imageUrl?: string | null;
  isAvailable: boolean;
  name: string;
  priceCents: number;
  restaurantId: number;
};

export type MenuItemPatchInput = {
  isAvailable?: boolean | null;
  priceCents?: number | null;
};

export type NearbyDriver = {
  activeOrders: number;
  available: boolean;
  distanceKm: number;
  id: number;
  lat: number;
  lon: number;
};

export type NearbyList = {
  drivers: NearbyDriver[];
};

export type NewMenuItemInput = {
  category: string;
  description: string;
  imageUrl?: string | null;
  isAvailable?: boolean | null;
  name: string;
  priceCents: number;
};

/** The example is an order the demo city accepts (`serve --demo`), so a client trying the document gets a 201. */
export type NewOrderInput = {
  deliveryAddress: AddressInput;
  items: OrderLineInput[];
  restaurantId: number;
};

export type NewRestaurantInput = {
  address: string;
  cuisineType: string;
  deliveryFeeCents?: number | null;
  deliveryRadiusKm?: number | null;
  imageUrl?: string | null;
  isOpen?: boolean | null;
  location: LatLonInput;
  name: string;
  owner: OwnerInput;
  prepTimeMinutes?: number | null;
  rating?: number | null;
};

export type NewWebhookInput = {
  /** Empty or missing: every type. */
  eventTypes?: string[] | null;
  /** Only this restaurant's events. */
  restaurantId?: number | null;
  /** An `https` URL (or `http` to loopback when allowed), not to a private address. */
  url: string;
};

export type NewZoneInput = {
  /** A GeoJSON Polygon or MultiPolygon (or a Feature of one). */
  geometry: Record<string, unknown>;
  name: string;
};

export type Order = {
  cancelReason?: string | null;
  cancelledAt?: string | null;
  confirmedAt?: string | null;
  customerId: number;
  deliveredAt?: string | null;
  deliveryAddress: DeliveryAddress;
  deliveryFeeCents: number;
  driverId?: null | number;
  estimatedDeliveryAt?: string | null;
  id: number;
  pickedUpAt?: string | null;
  placedAt: string;
  preparingAt?: string | null;
  readyAt?: string | null;
  restaurantId: number;
  serviceFeeCents: number;
  status: OrderStatus;
  subtotalCents: number;
  totalCents: number;
  version: number;
};

export type OrderBody = {
  order: Order;
};

export type OrderDetail = {
  driver?: null | Driver;
  driverLocation?: null | DriverLocation;
  eta?: null | Eta;
  items: OrderItem[];
  order: Order;
};

/** One line of an order's append-only history. `seq` is per order, from 1. */
export type OrderEvent = {
  actorId?: null | number;
  actorRole?: null | Role;
  at: string;
  data: unknown;
  fromStatus?: null | OrderStatus;
  seq: number;
  toStatus?: null | OrderStatus;
  type: OrderEventType;
};

export type OrderEventType = "ORDER_PLACED" | "STATUS_CHANGED" | "DRIVER_ASSIGNED" | "DRIVER_UNASSIGNED" | "DRIVER_APPROACHING" | "DRIVER_ARRIVED";

export type OrderItem = {
  id: number;
  menuItemId: number;
  name: string;
  orderId: number;
  quantity: number;
  specialInstructions?: string | null;
  unitPriceCents: number;
};

export type OrderLineInput = {
  menuItemId: number;
  quantity: number;
  specialInstructions?: string | null;
};

export type OrderList = {
  orders: Order[];
};

export type OrderStatus = "PLACED" | "CONFIRMED" | "PREPARING" | "READY_FOR_PICKUP" | "PICKED_UP" | "DELIVERED" | "CANCELLED";

export type OwnerInput = {
  email: string;
  name: string;
  password: string;
};

export type PendingList = {
  drivers: Driver[];
};

/** The body of a 201 to `POST /api/orders`, kept verbatim in the idempotency record so that a replay returns exactly the first response. */
export type PlacedOrder = {
  estimatedDeliveryAt?: string | null;
  items: OrderItem[];
  order: Order;
};

export type PointInput = {
  lat: number;
  lon: number;
};

/** One region as `GET /api/admin/cluster` shows it. */
export type RegionStatus = {
  /** The lease's epoch, for the regions this node holds. */
  epoch?: number | null;
  /** The node this one sees holding it (None: free, or its lease lapsed). */
  node?: string | null;
  region: string;
};

export type RegistrationInput = {
  email: string;
  name: string;
  password: string;
  role: RegistrationRole;
  vehicleType?: null | VehicleType;
};

/** The roles one may register as (staff accounts come with their restaurant; admins are made by operators). */
export type RegistrationRole = "customer" | "driver";

export type Restaurant = {
  address: string;
  cuisineType: string;
  deliveryFeeCents: number;
  deliveryRadiusKm: number;
  /** Present only in nearest-first listings. */
  distanceKm?: number | null;
  id: number;
  imageUrl?: string | null;
  isOpen: boolean;
  location: LatLon;
  name: string;
  prepTimeMinutes: number;
  rating: number;
};

export type RestaurantBody = {
  restaurant: Restaurant;
};

export type RestaurantList = {
  restaurants: Restaurant[];
};

export type RestaurantPatchInput = {
  isOpen?: boolean | null;
  prepTimeMinutes?: number | null;
};

export type RestaurantWithMenu = {
  menu: MenuItem[];
  restaurant: Restaurant;
};

export type RestaurantZone = {
  restaurantId: number;
  zoneId?: number | null;
};

export type RestaurantZoneInput = {
  /** Null: the restaurant delivers within its radius only. */
  zoneId?: number | null;
};

/** Who a caller is. Restaurant staff belong to exactly one restaurant. */
export type Role = "customer" | "driver" | "restaurant" | "admin";

export type Status = {
  /** `ok` (alive) or `ready`. */
  status: string;
};

export type TokenResponse = {
  token: string;
  user: User;
};

export type TransitionInput = {
  action: Action;
  /** Refused with 409 `VERSION_CONFLICT` unless the order is at this version. */
  expectedVersion?: number | null;
  reason?: string | null;
};

export type User = {
  email: string;
  id: number;
  name: string;
  role: Role;
};

export type VehicleType = "car" | "bike" | "scooter" | "walk";

export type Webhook = {
  createdAt: string;
  disabledReason?: string | null;
  /** Empty: every type. */
  eventTypes: string[];
  id: number;
  restaurantId?: number | null;
  /** `active` or `disabled`. */
  status: string;
  url: string;
};

export type WebhookBody = {
  webhook: Webhook;
};

export type WebhookList = {
  webhooks: Webhook[];
};

export type WebhookPatchInput = {
  enabled: boolean;
};

export type ZoneBody = {
  zone: ZoneRecord;
};

export type ZoneList = {
  zones: ZoneRecord[];
};

/** A zone as the API shows it. */
export type ZoneRecord = {
  createdAt: string;
  /** The GeoJSON geometry. */
  geometry: unknown;
  id: number;
  name: string;
  /** Restaurants that deliver only inside it. */
  restaurantIds: number[];
};

/** One drop-off of an offer, in sequence. */
export type OfferDropoff = {
  lat: number;
  lon: number;
  orderId: number;
};

export type OfferOutcome = "assigned" | "declined" | "expired" | "taken";

/** A driver on the operator's map. */
export type OpsDriver = {
  activeOrders: number;
  id: number;
  lat: number;
  lon: number;
  /** `available`, `offered`, `busy` (carrying an order), `paused` (or without a socket), or `stale` (no position for half the presence TTL). */
  state: string;
};

/** A confirmed order still waiting for a driver. */
export type OpsOrder = {
  /** No driver can deliver it within the maximum click-to-door any more. */
  hopeless: boolean;
  offeredTo?: null | number;
  orderId: number;
  radiusKm: number;
  restaurantId: number;
  waitingSecs: number;
};

export type Pickup = {
  lat: number;
  lon: number;
  name: string;
  restaurantId: number;
};

/** What a client sends on the socket. */
export type ClientMessage =
  | (LocationInput & {
    type: "location";
  })
    | {
    accept: boolean;
    offerId: number;
    type: "offer_response";
  }
    | {
    id?: unknown;
    type: "ping";
  }
    | {
    available: boolean;
    type: "set_availability";
  }
    | {
    orderId: number;
    type: "subscribe";
  }
    | {
    type: "subscribe_ops";
  }
    | {
    restaurantId: number;
    type: "subscribe_restaurant";
  }
    | {
    orderId: number;
    type: "unsubscribe";
  }
    | {
    type: "unsubscribe_ops";
  };

/** What the server sends on the socket. */
export type ServerMessage =
  | {
    at: string;
    distanceM: number;
    orderId: number;
    stop: string;
    type: "driver_approaching";
  }
    | {
    at: string;
    distanceM: number;
    orderId: number;
    stop: string;
    type: "driver_arrived";
  }
    | ({
    eta?: null | Eta;
    location: DriverLocation;
    orderId: number;
    type: "driver_location";
  })
    | {
    code: string;
    message: string;
    ref?: unknown;
    type: "error";
  }
    | {
    distanceKm: number;
    dropoff: LatLon;
    dropoffs: OfferDropoff[];
    expiresAt: string;
    offerId: number;
    orderId: number;
    orderIds: number[];
    pickup: Pickup;
    type: "offer";
  }
    | {
    offerId: number;
    orderId: number;
    orderIds: number[];
    result: OfferOutcome;
    type: "offer_result";
  }
    | {
    at: string;
    drivers: OpsDriver[];
    offersInFlight: number;
    positionsPerSec: number;
    type: "ops";
    waiting: OpsOrder[];
  }
    | ({
    eta?: null | Eta;
    order: Order;
    orderId: number;
    status: OrderStatus;
    type: "order_update";
    version: number;
  })
    | {
    id?: unknown;
    type: "pong";
  }
    | ({
    driver?: null | Driver;
    driverLocation?: null | DriverLocation;
    eta?: null | Eta;
    order: Order;
    orderId: number;
    type: "snapshot";
  });

