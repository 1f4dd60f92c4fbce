"""placeholder"""
def actions(flow):
    return ''
