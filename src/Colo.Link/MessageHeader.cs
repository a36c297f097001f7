namespace Colo.Link;

/// <summary>A decoded 16-byte message header (magic and version are validated, not kept).</summary>
/// <param name="Type">The message type.</param>
/// <param name="Epoch">The checkpoint epoch the sender was in when it sent the message.</param>
/// <param name="PayloadLength">Payload length in bytes, 0 to <see cref="LinkFraming.MaxPayloadLength"/>.</param>
public readonly record struct MessageHeader(MessageType Type, ulong Epoch, int PayloadLength);
