// The engine's objects in Docker's wire shape (the fields the UI uses).

export interface PortEntry {
  IP?: string;
  PrivatePort: number;
  PublicPort?: number;
  Type: string;
}

export interface ContainerSummary {
  Id: string;
  Names: string[];
  Image: string;
  ImageID?: string;
  Command?: string;
  Created: number;
  State: string;
  Status: string;
  Ports?: PortEntry[];
  Labels?: Record<string, string>;
  Mounts?: { Type: string; Name?: string; Source?: string; Destination: string }[];
}

export interface ImageSummary {
  Id: string;
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  Created: number;
  Size: number;
  Containers: number;
  UsedBy: string[];
  Dangling: boolean;
  Labels?: Record<string, string> | null;
}

export interface Volume {
  Name: string;
  Driver: string;
  Mountpoint: string;
  CreatedAt?: string;
  Labels?: Record<string, string> | null;
  Scope?: string;
  UsageData?: { Size: number; RefCount: number } | null;
  UsedBy: string[];
}

export interface Network {
  Id: string;
  Name: string;
  Driver: string;
  Scope: string;
  Internal?: boolean;
  Created?: string;
  IPAM?: { Config?: { Subnet?: string; Gateway?: string }[] | null };
  Attached: string[];
}

export interface HostErrorShape {
  kind: 'engine_unreachable' | 'not_found' | 'conflict' | 'bad_request' | 'engine' | 'invalid' | 'io';
  message: string;
  status?: number;
}

export interface EngineState {
  state: 'unknown' | 'running' | 'stopped' | 'starting';
  host: string;
  version?: string;
  apiVersion?: string;
  error?: HostErrorShape;
}

export interface Settings {
  theme: 'system' | 'light' | 'dark';
  dockerHost: string;
  startEngine: boolean;
  startAtLogin: boolean;
  closeToTray: boolean;
  confirmDeletes: boolean;
  engineLog: string;
}
