"""SDP (RFC 4566) for a channel's multicast RTP stream, so ffmpeg or VLC can tune in."""

from __future__ import annotations

import ipaddress

from broadcaster.config import ChannelConfig
from broadcaster.protocols.rtp import OPUS_PAYLOAD_TYPE


def channel_sdp(channel: ChannelConfig, ssrc: int, frame_ms: int, origin: str = "0.0.0.0") -> str:
    if channel.multicast is None:
        raise ValueError(f"channel {channel.id} has no multicast group")
    group = ipaddress.ip_address(channel.multicast.group)
    family = "IP4" if group.version == 4 else "IP6"
    connection = f"{group}/{channel.multicast.ttl}" if group.version == 4 else str(group)
    origin_family = "IP4" if ipaddress.ip_address(origin).version == 4 else "IP6"
    # RFC 7587 7: the rtpmap always says opus/48000/2, even for mono streams.
    lines = [
        "v=0",
        f"o=- {ssrc} 1 IN {origin_family} {origin}",
        f"s={channel.name}",
        f"i=broadcaster channel {channel.id}",
        f"c=IN {family} {connection}",
        "t=0 0",
        f"m=audio {channel.multicast.port} RTP/AVP {OPUS_PAYLOAD_TYPE}",
        f"a=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2",
        f"a=fmtp:{OPUS_PAYLOAD_TYPE} sprop-stereo=0; stereo=0",
        f"a=ptime:{frame_ms}",
        "a=recvonly",
        f"a=ssrc:{ssrc} cname:broadcaster-{channel.id}",
    ]
    return "\r\n".join(lines) + "\r\n"
