import { describe, expect, it } from 'vitest';
import { filter, groupByProject, name, ports, tone } from '../src/lib/containers';
import type { ContainerSummary } from '../src/types';

const c = (n: string, state: string, project?: string, extra: Partial<ContainerSummary> = {}): ContainerSummary => ({
  Id: n.padEnd(64, '0'),
  Names: ['/' + n],
  Image: 'busybox',
  Created: 0,
  State: state,
  Status: '',
  Labels: project ? { 'com.docker.compose.project': project, 'com.docker.compose.service': n } : {},
  ...extra,
});

describe('containers', () => {
  it('ports: one link per published port, IPv4/IPv6 once, udp without link', () => {
    const ps = ports([
      { IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' },
      { IP: '::', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' },
      { IP: '127.0.0.1', PrivatePort: 53, PublicPort: 5353, Type: 'udp' },
      { PrivatePort: 443, Type: 'tcp' },
    ]);
    expect(ps.map((p) => [p.label, p.url])).toEqual([
      ['5353:53/udp', undefined],
      ['8080:80/tcp', 'http://localhost:8080'],
      ['443/tcp', undefined],
    ]);
    expect(ports([{ IP: '127.0.0.1', PrivatePort: 80, PublicPort: 9000, Type: 'tcp' }])[0].url).toBe('http://127.0.0.1:9000');
  });
  it('groups by compose project, loose containers last', () => {
    const gs = groupByProject([c('z', 'running'), c('web', 'running', 'shop'), c('db', 'exited', 'shop'), c('a', 'exited', 'blog')]);
    expect(gs.map((g) => [g.project, g.containers.map(name), g.running])).toEqual([
      ['blog', ['a'], 0],
      ['shop', ['db', 'web'], 1],
      [null, ['z'], 1],
    ]);
  });
  it('filters by text and state', () => {
    const list = [c('web', 'running', 'shop', { Ports: [{ PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }] }), c('db', 'exited'), c('p', 'paused')];
    expect(filter(list, 'shop', 'all').map(name)).toEqual(['web']);
    expect(filter(list, '8080', 'all').map(name)).toEqual(['web']);
    expect(filter(list, '', 'running').map(name)).toEqual(['web', 'p']);
    expect(filter(list, '', 'stopped').map(name)).toEqual(['db']);
  });
  it('state tones', () => {
    expect(tone('running')).toBe('running');
    expect(tone('removing')).toBe('dead');
    expect(tone('weird')).toBe('unknown');
  });
});
