using System.Reflection;

namespace Colo.Node;

/// <summary>Turns a counters object's public numeric properties and fields into a name → value map for status.json.</summary>
internal static class CounterSnapshot
{
    public static Dictionary<string, long> Of(object counters)
    {
        var result = new Dictionary<string, long>();
        foreach (var p in counters.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
            Add(result, p.Name, p.GetValue(counters));
        foreach (var f in counters.GetType().GetFields(BindingFlags.Public | BindingFlags.Instance))
            Add(result, f.Name, f.GetValue(counters));
        return result;
    }

    private static void Add(Dictionary<string, long> result, string name, object? value)
    {
        switch (value)
        {
            case long l: result[name] = l; break;
            case int i: result[name] = i; break;
            case ulong u: result[name] = (long)u; break;
            case System.Collections.IDictionary d:
                foreach (System.Collections.DictionaryEntry e in d)
                    Add(result, name + "." + e.Key, e.Value);
                break;
            case long[] arr:
                for (int k = 0; k < arr.Length; k++)
                    result[name + "." + k] = arr[k];
                break;
        }
    }
}
