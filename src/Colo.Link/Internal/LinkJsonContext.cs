using System.Text.Json.Serialization;

namespace Colo.Link.Internal;

/// <summary>Source-generated System.Text.Json metadata for link payloads.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(LinkHello))]
internal sealed partial class LinkJsonContext : JsonSerializerContext
{
}
